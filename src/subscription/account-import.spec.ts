import { loginFingerprint, parseAccounts, parseExpiry } from './account-import';

function jwt(payload: Record<string, unknown>): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64(payload)}.sig`;
}

describe('parseAccounts', () => {
  it('reads Codex auth.json as it is, account id and expiry from the tokens', () => {
    const exp = 1_900_000_000;
    const auth = {
      auth_mode: 'chatgpt',
      OPENAI_API_KEY: null,
      tokens: {
        id_token: jwt({
          email: 'alice@example.com',
          'https://api.openai.com/auth': { chatgpt_account_id: 'acct-a', chatgpt_plan_type: 'plus' },
        }),
        access_token: jwt({ exp, 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-a' } }),
        refresh_token: 'rt-a',
      },
      last_refresh: '2025-12-28T12:34:56Z',
    };
    const { accounts, errors } = parseAccounts('codex', auth);
    expect(errors).toEqual([]);
    expect(accounts).toEqual([
      expect.objectContaining({
        provider: 'codex',
        name: 'alice@example.com',
        externalAccountId: 'acct-a',
        planType: 'plus',
        email: 'alice@example.com',
        expiresAt: exp * 1000,
      }),
    ]);
    expect(accounts[0].credentials).toMatchObject({ refreshToken: 'rt-a', idToken: auth.tokens.id_token });
  });

  it('reads a list of Codex entries, flat or auth.json-shaped, preferring the explicit account_id', () => {
    const { accounts, errors } = parseAccounts('codex', {
      accounts: [
        { name: 'one', tokens: { access_token: 'opaque', refresh_token: 'r1', account_id: 'acct-1' } },
        {
          name: 'two',
          access_token: jwt({ 'https://api.openai.com/auth': { chatgpt_account_id: 'from-claim' } }),
          refresh_token: 'r2',
          account_id: 'explicit',
        },
      ],
    });
    expect(errors).toEqual([]);
    expect(accounts.map((a) => [a.name, a.externalAccountId, a.expiresAt])).toEqual([
      ['one', 'acct-1', null],
      ['two', 'explicit', null],
    ]);
  });

  it('reads Claude entries flat or in Claude Code credentials shape, naming unnamed ones by position', () => {
    const { accounts, errors } = parseAccounts('claude', [
      { name: 'team-a', access_token: 'sk-ant-oat01-a', refresh_token: 'sk-ant-ort01-a', expires_at: 1_900_000_000_000 },
      {
        claudeAiOauth: {
          accessToken: 'sk-ant-oat01-b',
          refreshToken: 'sk-ant-ort01-b',
          expiresAt: 1_900_000_000_000,
          scopes: ['user:inference'],
        },
      },
    ]);
    expect(errors).toEqual([]);
    expect(accounts.map((a) => [a.name, a.credentials.refreshToken, a.expiresAt])).toEqual([
      ['team-a', 'sk-ant-ort01-a', 1_900_000_000_000],
      ['claude-2', 'sk-ant-ort01-b', 1_900_000_000_000],
    ]);
  });

  it('lists every problem with its place, and keeps the good entries', () => {
    const { accounts, errors } = parseAccounts('claude', {
      accounts: [
        { name: 'ok', access_token: 'a', refresh_token: 'r' },
        { name: 'bad' },
        'nope',
        { name: 'ok', access_token: 'a', refresh_token: 'r' },
        { name: 'e', access_token: 'a', refresh_token: 'r', expires_at: 'soon' },
      ],
    });
    expect(accounts.map((a) => a.name)).toEqual(['ok']);
    expect(errors).toEqual([
      "accounts[1].refresh_token: is required (the login's refresh token, sk-ant-ort01-...)",
      "accounts[1].access_token: is required (the login's access token, sk-ant-oat01-...)",
      'accounts[2]: must be an object',
      'accounts[3].name: "ok" appears twice',
      'accounts[4].expires_at: must be epoch milliseconds or an ISO date',
    ]);
  });

  it('refuses tokens longer than a header can carry', () => {
    const huge = 'x'.repeat(16_385);
    const claude = parseAccounts('claude', { accounts: [{ name: 'big', access_token: huge, refresh_token: 'r' }] });
    expect(claude.accounts).toEqual([]);
    expect(claude.errors).toEqual(['accounts[0].access_token: must be at most 16384 characters (this one has 16385)']);
    const codex = parseAccounts('codex', { name: 'big', tokens: { access_token: 'a', refresh_token: huge, account_id: 'acct' } });
    expect(codex.accounts).toEqual([]);
    expect(codex.errors[0]).toMatch(/tokens\.refresh_token: must be at most 16384 characters/);
  });

  it('refuses a name given blank or not as a string, instead of naming the login by position', () => {
    for (const provider of ['claude', 'codex'] as const) {
      const { accounts, errors } = parseAccounts(provider, [
        { name: '   ', access_token: 'a', refresh_token: 'r', account_id: 'x' },
        { name: 42, access_token: 'a', refresh_token: 'r', account_id: 'y' },
      ]);
      expect(accounts).toEqual([]);
      expect(errors).toEqual([
        '[0].name: must be a non-blank string (or left out, for an automatic name)',
        '[1].name: must be a non-blank string (or left out, for an automatic name)',
      ]);
    }
  });

  it('asks for names of Claude logins where a place is no identity (the admin API), and for a visible name', () => {
    const entry = { access_token: 'a', refresh_token: 'r' };
    expect(parseAccounts('claude', [entry]).accounts.map((a) => a.name)).toEqual(['claude-1']);
    expect(parseAccounts('claude', [entry, { ...entry, name: null }], { positionalNames: false }).errors).toEqual([
      "[0].name: is required (an automatic name, claude-N, could be another login's)",
      "[1].name: is required (an automatic name, claude-N, could be another login's)",
    ]);
    expect(parseAccounts('claude', [{ ...entry, name: '\u200b' }]).errors).toEqual(['[0].name: must have a visible character']);
  });

  it('refuses a Codex API-key login and an entry without an account id', () => {
    expect(
      parseAccounts('codex', { auth_mode: 'apikey', tokens: { access_token: 'a', refresh_token: 'r', account_id: 'x' } }).errors,
    ).toEqual([expect.stringContaining('auth_mode: "apikey" is not a ChatGPT login')]);
    expect(parseAccounts('codex', { access_token: 'opaque', refresh_token: 'r' }).errors).toEqual([
      expect.stringContaining('account_id: is required'),
    ]);
  });

  it('refuses an account id longer than its column, and cuts informational fields to theirs', () => {
    expect(parseAccounts('codex', { access_token: 'a', refresh_token: 'r', account_id: 'x'.repeat(201) }).errors).toEqual([
      '(account).account_id: must be at most 200 characters',
    ]);
    const { accounts } = parseAccounts('claude', {
      name: 'n',
      access_token: 'a',
      refresh_token: 'r',
      email: `${'e'.repeat(400)}@x`,
      subscription_type: 'p'.repeat(100),
    });
    expect([accounts[0].email?.length, accounts[0].planType?.length]).toEqual([320, 64]);
  });

  it('refuses what is not an account file', () => {
    expect(parseAccounts('codex', 'text').errors).toEqual([expect.stringContaining('expected an object')]);
  });

  it('reads expiries as epoch ms, epoch seconds or ISO dates', () => {
    expect(parseExpiry(1_900_000_000)).toBe(1_900_000_000_000);
    expect(parseExpiry(1_900_000_000_000)).toBe(1_900_000_000_000);
    expect(parseExpiry('2030-01-01T00:00:00Z')).toBe(Date.UTC(2030, 0, 1));
    expect(parseExpiry(null)).toBeNull();
    expect(parseExpiry('later')).toBeUndefined();
    // Free text Date.parse reads anyway ("expires soon 5" was May 2001), and impossible dates.
    for (const text of ['expires soon 5', 'Tuesday 5', '2030-02-30', '2030-01-01T24:00:00Z'])
      expect([text, parseExpiry(text)]).toEqual([text, undefined]);
    expect(parseExpiry('2030-01-01 12:00')).toBe(Date.UTC(2030, 0, 1, 12));
  });

  it('refuses expiries no database can store as a date (past year 9999)', () => {
    expect(parseExpiry(Date.UTC(9999, 11, 31))).toBe(Date.UTC(9999, 11, 31));
    expect(parseExpiry(1e20)).toBeUndefined();
    expect(parseExpiry(8.64e15)).toBeUndefined();
    expect(parseExpiry('+275760-09-13T00:00:00Z')).toBeUndefined();
    expect(parseExpiry('99999-01-01')).toBeUndefined();
    const entry = { name: 'far', access_token: 'a', refresh_token: 'r', expires_at: 1e20 };
    expect(parseAccounts('claude', { accounts: [entry] }).errors).toEqual([expect.stringContaining('expires_at')]);
  });
});

describe('loginFingerprint', () => {
  it('is the same whatever the encryption key, differs per token and provider, and is a digest only', () => {
    const f = loginFingerprint('claude', 'sk-ant-ort01-secret-token');
    expect(f).toMatch(/^[0-9a-f]{64}$/);
    expect(loginFingerprint('claude', 'sk-ant-ort01-secret-token')).toBe(f);
    expect(loginFingerprint('claude', 'sk-ant-ort01-secret-tokem')).not.toBe(f);
    expect(loginFingerprint('codex', 'sk-ant-ort01-secret-token')).not.toBe(f);
  });
});
