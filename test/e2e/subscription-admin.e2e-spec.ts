import { Client } from 'pg';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { AccountAdmin } from '../../src/subscription/account-admin.service';
import { parseAccounts } from '../../src/subscription/account-import';
import { AccountImporter } from '../../src/subscription/account-importer.service';
import { AccountPool } from '../../src/subscription/account-pool.service';
import { CodexBackend } from '../fixtures/codex-backend';
import { OAuthTokenServer } from '../fixtures/oauth-token-server';
import { startGateway } from '../helpers/gateway';
import { createTestDatabase, PG_ADMIN } from '../helpers/postgres';
import { TcpProxy } from '../helpers/tcp-proxy';
import { ADMIN_TOKEN, CODEX_CLIENT_ID, codexFile, sharedDb, startSubscriptionGateway, type SharedDb } from '../helpers/subscriptions';

type Gateway = Awaited<ReturnType<typeof startSubscriptionGateway>>;

/** /admin/accounts: what it shows (never a token), what it changes, how it refuses bad input; tokens at rest. */
describe.each(['sqlite', 'postgres'] as const)('subscription accounts admin API on %s', (backend) => {
  const tokens = new OAuthTokenServer('codex', CODEX_CLIENT_ID);
  const codex = new CodexBackend(tokens);
  let tokenUrl: string;
  let codexUrl: string;
  let db: SharedDb;
  let gw: Gateway;

  beforeAll(async () => {
    tokenUrl = await tokens.start();
    codexUrl = await codex.start();
  });
  afterAll(async () => {
    await Promise.all([tokens.stop(), codex.stop()]);
  });
  beforeEach(async () => {
    db = await sharedDb(backend);
    codex.requests.length = 0;
    const models = `models:\n  - id: codex/gpt\n    context_length: 1000\n    route: [{ kind: codex_sub, base_url: "${codexUrl}", provider_model_id: gpt-5.1-codex }]\n`;
    gw = await startSubscriptionGateway({ models, db, codexTokenUrl: tokenUrl });
  });
  afterEach(async () => {
    await gw.close();
    await db.drop();
  });

  const post = (path: string, body?: unknown) =>
    gw.admin(path, { method: 'POST', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });

  /** Every column of every account row, as stored. */
  async function rawRows(): Promise<Array<Record<string, unknown>>> {
    if (backend === 'postgres') {
      const c = new Client({ connectionString: db.env.DATABASE_URL });
      await c.connect();
      try {
        return (await c.query('SELECT * FROM subscription_accounts')).rows as Array<Record<string, unknown>>;
      } finally {
        await c.end();
      }
    }
    const sqlite = new Database(join(db.dir, 'shared.sqlite'), { readonly: true });
    try {
      return sqlite.prepare('SELECT * FROM subscription_accounts').all() as Array<Record<string, unknown>>;
    } finally {
      sqlite.close();
    }
  }

  it('adds, imports, lists and shows accounts, never returning a token; tokens are encrypted at rest', async () => {
    const a = tokens.login({ accountId: 'acct-admin-a', email: 'a@example.com' });
    const b = tokens.login({ accountId: 'acct-admin-b', email: 'b@example.com' });
    const added = await post('', {
      provider: 'codex',
      name: 'first',
      access_token: a.access_token,
      refresh_token: a.refresh_token,
      id_token: a.id_token,
    });
    expect(added.status).toBe(201);
    const addedText = await added.text();
    expect(JSON.parse(addedText)).toMatchObject({
      provider: 'codex',
      name: 'first',
      status: 'active',
      account_id: 'acct-admin-a',
      email: 'a@example.com',
      plan_type: 'plus',
      token_expires_at: new Date(Math.floor(a.expiresAt / 1000) * 1000).toISOString(),
    });

    // Codex's auth.json as one entry of the import.
    const imported = await post('/import', {
      provider: 'codex',
      accounts: [
        {
          name: 'second',
          auth_mode: 'chatgpt',
          tokens: { id_token: b.id_token, access_token: b.access_token, refresh_token: b.refresh_token, account_id: b.accountId },
        },
      ],
    });
    expect(imported.status).toBe(200);
    const importedText = await imported.text();
    expect(JSON.parse(importedText)).toEqual({ added: ['second'], updated: [], unchanged: [], errors: [] });
    // The same again: nothing to do.
    expect(
      await (
        await post('/import', {
          provider: 'codex',
          accounts: [{ name: 'second', tokens: { access_token: b.access_token, refresh_token: b.refresh_token, account_id: b.accountId } }],
        })
      ).json(),
    ).toMatchObject({ unchanged: ['second'] });

    const list = await gw.admin('');
    const listText = await list.text();
    const data = (JSON.parse(listText) as { data: Array<{ id: string; name: string; status: string }> }).data;
    expect(data.map((d) => [d.name, d.status])).toEqual([
      ['first', 'active'],
      ['second', 'active'],
    ]);
    const one = await gw.admin(`/${data[1].id}`);
    const oneText = await one.text();
    expect(JSON.parse(oneText)).toMatchObject({ id: data[1].id, name: 'second', account_id: b.accountId });
    const refreshed = await post(`/${data[0].id}/refresh`);
    const refreshedText = await refreshed.text();
    expect(JSON.parse(refreshedText)).toMatchObject({ refreshed: true, account: { name: 'first', last_refresh_at: expect.any(String) } });
    expect(((await gw.admin('?provider=codex').then((r) => r.json())) as { data: unknown[] }).data).toHaveLength(2);
    expect(((await gw.admin('?provider=claude').then((r) => r.json())) as { data: unknown[] }).data).toHaveLength(0);

    const secrets = [a.access_token, a.refresh_token, a.id_token!, b.access_token, b.refresh_token, b.id_token!];
    for (const text of [addedText, importedText, listText, oneText, refreshedText]) for (const s of secrets) expect(text).not.toContain(s);

    // At rest: no token, in any column, in any encoding we would recognise.
    const rows = await rawRows();
    expect(rows).toHaveLength(2);
    const stored = JSON.stringify(rows);
    expect(tokens.refreshes).toHaveLength(1);
    for (const s of tokens.issued) {
      expect(stored).not.toContain(s);
      expect(stored).not.toContain(Buffer.from(s).toString('base64'));
    }
    expect(rows.every((r) => typeof r.credentials === 'string' && r.credentials.startsWith('v1:'))).toBe(true);
    // The refreshed tokens are stored sealed too, and they serve.
    expect(
      (await gw.client().chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'hi' }] })).choices[0].message
        .content,
    ).toBe('echo: hi');
  });

  it('waits for a token endpoint that answers a refresh late, instead of losing the rotated login', async () => {
    const login = tokens.login({ accountId: 'acct-slow', email: 'slow@example.com' });
    const added = await post('', {
      provider: 'codex',
      name: 'slow',
      access_token: login.access_token,
      refresh_token: login.refresh_token,
      id_token: login.id_token,
    });
    const { id } = (await added.json()) as { id: string };
    // The endpoint rotates the refresh token when the answer leaves, 17 s after the request came.
    tokens.delayMs = 17_000;
    try {
      const refreshed = await post(`/${id}/refresh`);
      expect(await refreshed.json()).toMatchObject({ refreshed: true, account: { status: 'active' } });
    } finally {
      tokens.delayMs = 0;
    }
    // The rotated token was kept: the next refresh sends it, not the spent one.
    expect(await (await post(`/${id}/refresh`)).json()).toMatchObject({ refreshed: true });
    expect(tokens.reused).toBe(0);
  }, 40_000);

  it('answers an import that keeps meeting another one changing the same account with a 409 to send again', async () => {
    const entry = (l: ReturnType<typeof tokens.login>) => ({
      provider: 'codex',
      accounts: [{ name: 'raced', access_token: l.access_token, refresh_token: l.refresh_token, account_id: l.accountId }],
    });
    expect((await post('/import', entry(tokens.login({ accountId: 'acct-r' })))).status).toBe(200);
    // As when other admin calls or replicas store new credentials for it at the same moment:
    // every conditional write of this import finds the row changed.
    const importer = gw.app.get<AccountImporter, { update: () => Promise<boolean> }>(AccountImporter);
    importer.update = () => Promise.resolve(false);
    const res = await post('/import', entry(tokens.login({ accountId: 'acct-r' })));
    expect(res.status).toBe(409);
    expect(await res.json()).toMatchObject({
      error: { type: 'invalid_request_error', code: 'account_import_conflict', message: expect.stringContaining('send the import again') },
    });
  });

  it('disables and enables: a disabled account is skipped until enabled', async () => {
    const logins = [tokens.login({ accountId: 'acct-d1' }), tokens.login({ accountId: 'acct-d2' })];
    expect(
      (
        await post('/import', {
          provider: 'codex',
          accounts: logins.map((l, i) => ({
            name: `n${i + 1}`,
            access_token: l.access_token,
            refresh_token: l.refresh_token,
            account_id: l.accountId,
          })),
        })
      ).status,
    ).toBe(200);
    const [first] = ((await (await gw.admin('')).json()) as { data: Array<{ id: string }> }).data;
    expect(await (await post(`/${first.id}/disable`)).json()).toMatchObject({ status: 'disabled' });
    const client = gw.client();
    const ask = () => client.chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
    await ask();
    await ask();
    expect(codex.served()).toEqual(['acct-d2', 'acct-d2']);
    expect(await (await post(`/${first.id}/enable`)).json()).toMatchObject({ status: 'active' });
    await ask();
    await ask();
    expect(codex.served().slice(2).sort()).toEqual(['acct-d1', 'acct-d2']);
  });

  // Row locks: on SQLite a writer waits for the whole file, so no read can come between.
  (backend === 'postgres' ? it : it.skip)('never writes an enable over a revocation made meanwhile by another process', async () => {
    const login = tokens.login({ accountId: 'acct-race' });
    const added = await post('', { provider: 'codex', name: 'race', access_token: login.access_token, refresh_token: login.refresh_token });
    expect(added.status).toBe(201);
    const { id } = (await added.json()) as { id: string };
    expect(await (await post(`/${id}/disable`)).json()).toMatchObject({ status: 'disabled' });
    // Another replica revokes it (its refresh token was refused) and is slow to commit.
    const other = new Client({ connectionString: db.env.DATABASE_URL });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query(`UPDATE subscription_accounts SET status = 'revoked', last_error = 'invalid_grant' WHERE id = $1`, [id]);
      const enabling = post(`/${id}/enable`);
      await new Promise((r) => setTimeout(r, 500));
      await other.query('COMMIT');
      const res = await enabling;
      expect(res.status).toBe(409);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('account_revoked');
    } finally {
      await other.end();
    }
    expect((await rawRows()).find((r) => r.id === id)).toMatchObject({ status: 'revoked', last_error: 'invalid_grant' });
  });

  it('answers bad input with a 400 naming every field, unknown ids with 404, in the OpenAI error shape', async () => {
    const bad = await post('', { provider: 'gemini', name: '', refresh_token: 7, extra: true });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: { message: string; type: string } };
    expect(body.error.type).toBe('invalid_request_error');
    for (const field of ['provider', 'name', 'access_token', 'refresh_token', 'property extra should not exist'])
      expect(body.error.message).toContain(field);

    const noBody = await post('');
    expect(noBody.status).toBe(400);
    // A filter the list does not know is refused, not ignored (every account listed).
    for (const query of ['?status=cooldown', '?provider=claude&provider=codex']) {
      const res = await gw.admin(query);
      expect([query, res.status]).toEqual([query, 400]);
    }
    // A body that is not an object is told so, as on the key endpoints, not listed as every field missing.
    for (const body of [null, [], 'x']) {
      const res = await post('', body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string; param: string } }).error).toMatchObject({
        message: 'The request body must be a JSON object',
        param: 'body',
      });
    }

    const badImport = await post('/import', {
      provider: 'codex',
      accounts: [
        { name: 'ok', access_token: 'a', refresh_token: 'r', account_id: 'x' },
        { name: 'broken', access_token: 'a' },
      ],
    });
    expect(badImport.status).toBe(400);
    expect(((await badImport.json()) as { error: { message: string } }).error.message).toMatch(/accounts\[1\]\.refresh_token: is required/);
    // All or nothing: the good entry was not stored either.
    expect(((await (await gw.admin('')).json()) as { data: unknown[] }).data).toHaveLength(0);

    const notAList = await post('/import', { provider: 'codex', accounts: 'nope' });
    expect(notAList.status).toBe(400);

    // An unnamed Claude login through the API: its automatic name could be another login's.
    const unnamed = await post('/import', {
      provider: 'claude',
      accounts: [{ access_token: 'sk-ant-oat01-x', refresh_token: 'sk-ant-ort01-x' }],
    });
    expect(unnamed.status).toBe(400);
    expect(((await unnamed.json()) as { error: { message: string } }).error.message).toMatch(/accounts\[0\]\.name: is required/);

    // An expiry no database stores as a date (it used to be stored as NaN and break every listing).
    for (const expiry of [1e20, '+275760-09-13T00:00:00Z']) {
      const far = await post('', { provider: 'claude', name: 'far', access_token: 'a', refresh_token: 'r', expires_at: expiry });
      expect(far.status).toBe(400);
      expect(((await far.json()) as { error: { message: string } }).error.message).toContain('expires_at');
    }
    const farImport = await post('/import', {
      provider: 'claude',
      accounts: [{ name: 'far', claudeAiOauth: { accessToken: 'a', refreshToken: 'r', expiresAt: 1e20 } }],
    });
    expect(farImport.status).toBe(400);
    expect((await gw.admin('')).status).toBe(200);

    const codexNoAccount = await post('', { provider: 'codex', name: 'x', access_token: 'opaque', refresh_token: 'r' });
    expect(codexNoAccount.status).toBe(400);
    expect(((await codexNoAccount.json()) as { error: { message: string } }).error.message).toContain('account_id');

    for (const [method, path] of [
      ['GET', '/acc_missing'],
      ['POST', '/acc_missing/disable'],
      ['POST', '/acc_missing/enable'],
      ['POST', '/acc_missing/refresh'],
      ['DELETE', '/acc_missing'],
    ]) {
      const res = await gw.admin(path, { method });
      expect(res.status).toBe(404);
      expect(await res.json()).toMatchObject({ error: { code: 'account_not_found' } });
    }
    expect((await gw.admin('?provider=gemini')).status).toBe(400);

    const dup = tokens.login({ accountId: 'acct-dup' });
    const entry = {
      provider: 'codex',
      name: 'dup',
      access_token: dup.access_token,
      refresh_token: dup.refresh_token,
      account_id: 'acct-dup',
    };
    expect((await post('', entry)).status).toBe(201);
    const again = await post('', entry);
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ error: { code: 'account_exists' } });

    // A name class-transformer drops is refused as any unknown field.
    const reserved = await gw.admin('', {
      method: 'POST',
      body: '{"provider": "codex", "name": "c", "access_token": "a", "refresh_token": "r", "constructor": "x"}',
    });
    expect(reserved.status).toBe(400);
    expect(await reserved.json()).toMatchObject({ error: { message: expect.stringContaining('property constructor should not exist') } });

    // The same login under another name: the two would spend each other's refresh tokens.
    const twin = await post('', { ...entry, name: 'twin' });
    expect(twin.status).toBe(409);
    expect(await twin.json()).toMatchObject({ error: { code: 'login_in_use', message: expect.stringContaining('"dup"') } });
    const other = tokens.login({ accountId: 'acct-other' });
    const batch = await post('/import', {
      provider: 'codex',
      accounts: [
        { name: 'twin-a', tokens: { access_token: dup.access_token, refresh_token: dup.refresh_token, account_id: 'acct-dup' } },
        { name: 'other', tokens: { access_token: other.access_token, refresh_token: other.refresh_token, account_id: 'acct-other' } },
        { name: 'twin-b', tokens: { access_token: other.access_token, refresh_token: other.refresh_token, account_id: 'acct-other' } },
      ],
    });
    expect(batch.status).toBe(200);
    const summary = (await batch.json()) as { added: string[]; errors: string[] };
    expect(summary.added).toEqual(['other']);
    expect(summary.errors).toEqual([expect.stringMatching(/^twin-a: .*"dup"/), expect.stringMatching(/^twin-b: .*"other"/)]);
    // One new login sent at once under several names, by add and by import: one account gets it.
    const race = tokens.login({ accountId: 'acct-race' });
    const raceTokens = { access_token: race.access_token, refresh_token: race.refresh_token, account_id: 'acct-race' };
    // Called on the service, not through HTTP (whose requests the server takes one at a time
    // often enough for the race not to show): eight at once, adds and imports.
    const admin = gw.app.get(AccountAdmin);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        i % 2 === 0
          ? admin.add(parseAccounts('codex', { accounts: [{ name: `race-${i}`, tokens: raceTokens }] }).accounts[0])
          : admin.import('codex', { accounts: [{ name: `race-${i}`, tokens: raceTokens }] }),
      ),
    );
    const added = outcomes.filter((o, i) => o.status === 'fulfilled' && (i % 2 === 0 || (o.value as { added: string[] }).added.length > 0));
    expect(added).toHaveLength(1);
    const refusals = outcomes.filter(
      (o, i) =>
        (o.status === 'rejected' && (o.reason as { code?: string }).code === 'login_in_use') ||
        (o.status === 'fulfilled' && i % 2 === 1 && (o.value as { errors: string[] }).errors.length > 0),
    );
    expect(refusals).toHaveLength(7);
    const list = (await (await gw.admin('')).json()) as { data: Array<{ name: string }> };
    expect(list.data.filter((a) => a.name.startsWith('race-'))).toHaveLength(1);

    // Its own login again is no conflict.
    expect(
      (
        await post('/import', {
          provider: 'codex',
          accounts: [{ name: 'dup', tokens: { access_token: dup.access_token, refresh_token: dup.refresh_token, account_id: 'acct-dup' } }],
        })
      ).status,
    ).toBe(200);
  });

  it('is behind ADMIN_TOKEN', async () => {
    expect((await fetch(`${gw.url}/admin/accounts`)).status).toBe(401);
    expect((await fetch(`${gw.url}/admin/accounts`, { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status).toBe(403);
    expect((await fetch(`${gw.url}/admin/accounts`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200);
  });

  it('removes an account from the table and from every pool', async () => {
    const l = tokens.login({ accountId: 'acct-rm' });
    const created = (await (
      await post('', { provider: 'codex', name: 'rm', access_token: l.access_token, refresh_token: l.refresh_token, account_id: 'acct-rm' })
    ).json()) as { id: string };
    expect(gw.app.get(AccountPool).usable('codex')).toEqual({ usable: 1, fresh: 1, untried: 1, total: 1 });
    expect((await gw.admin(`/${created.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(gw.app.get(AccountPool).usable('codex')).toEqual({ usable: 0, fresh: 0, untried: 0, total: 0 });
    expect(await rawRows()).toEqual([]);
  });
});

describe('subscription accounts without SUBSCRIPTION_ENCRYPTION_KEY', () => {
  it('refuses to store tokens (503 naming the variable) and skips the import files', async () => {
    const db = await sharedDb('sqlite');
    const tokens = new OAuthTokenServer('codex', CODEX_CLIENT_ID);
    const file = codexFile(db.dir, [{ name: 'filed', login: tokens.login({ accountId: 'acct-f' }) }]);
    const gw = await startGateway({
      models: 'models:\n  - id: demo\n    context_length: 10\n    route: [{ kind: mock }]\n',
      env: { ...db.env, ADMIN_TOKEN, SUBSCRIPTION_CODEX_ACCOUNTS_FILE: file },
    });
    try {
      const res = await fetch(`${gw.url}/admin/accounts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ provider: 'claude', name: 'x', access_token: 'sk-ant-oat01-x', refresh_token: 'sk-ant-ort01-x' }),
      });
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({
        error: { code: 'encryption_key_missing', message: expect.stringContaining('SUBSCRIPTION_ENCRYPTION_KEY') },
      });
      const list = (await (await fetch(`${gw.url}/admin/accounts`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as {
        data: unknown[];
      };
      expect(list.data).toEqual([]);
    } finally {
      await gw.close();
      await db.drop();
    }
  });

  it('refuses to start with a key that is not 32 bytes, naming the variable but not printing the value', async () => {
    const start = startGateway({
      models: 'models:\n  - id: d\n    context_length: 10\n    route: [{ kind: mock }]\n',
      env: { SUBSCRIPTION_ENCRYPTION_KEY: 'almost-a-key-but-too-short' },
    });
    const err = await start.then(
      () => new Error('started'),
      (e: Error) => e,
    );
    expect(err.message).toMatch(/SUBSCRIPTION_ENCRYPTION_KEY=\(hidden\): SUBSCRIPTION_ENCRYPTION_KEY must be 32 bytes/);
    expect(err.message).not.toContain('almost-a-key');
  });

  it('refuses to start with a codex_sub route, naming the variable', async () => {
    await expect(
      startGateway({ models: 'models:\n  - id: c\n    context_length: 10\n    route: [{ kind: codex_sub }]\n' }),
    ).rejects.toThrow(/codex_sub needs SUBSCRIPTION_ENCRYPTION_KEY/);
  });
});

describe('subscription accounts while PostgreSQL is unreachable', () => {
  it('the admin API answers 503 database_unavailable, and requests still use the accounts in memory', async () => {
    const pg = await createTestDatabase();
    const proxy = new TcpProxy(PG_ADMIN.host, PG_ADMIN.port);
    const port = await proxy.start();
    const tokens = new OAuthTokenServer('codex', CODEX_CLIENT_ID);
    const codex = new CodexBackend(tokens);
    const codexUrl = await codex.start();
    const db = await sharedDb('sqlite');
    const file = codexFile(db.dir, [{ name: 'mem', login: tokens.login({ accountId: 'acct-mem' }) }]);
    const gw = await startSubscriptionGateway({
      models: `models:\n  - id: codex/gpt\n    context_length: 1000\n    route: [{ kind: codex_sub, base_url: "${codexUrl}", provider_model_id: gpt-5.1-codex }]\n`,
      db: {
        ...db,
        env: {
          DB_BACKEND: 'postgres',
          DATABASE_URL: `postgres://${PG_ADMIN.user}${PG_ADMIN.password ? `:${PG_ADMIN.password}` : ''}@127.0.0.1:${port}/${pg.name}`,
          DB_CONNECT_TIMEOUT_MS: '5000',
        },
      },
      codexFile: file,
    });
    try {
      expect(gw.pool.usable('codex')).toEqual({ usable: 1, fresh: 1, untried: 1, total: 1 });
      await proxy.stop();
      const res = await gw.admin('');
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ error: { code: 'database_unavailable' } });
      const answer = await gw.client().chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'still here' }] });
      expect(answer.choices[0].message.content).toBe('echo: still here');
    } finally {
      // Also when an expectation failed before the proxy was stopped: a listening proxy would keep jest from exiting.
      await proxy.stop();
      await gw.close();
      await codex.stop();
      await db.drop();
      await pg.drop();
    }
  });
});
