import { UpstreamError } from '../../src/common/errors';
import type { AccountLease } from '../../src/subscription/account-pool.service';
import { OAuthTokenServer } from '../fixtures/oauth-token-server';
import { CLAUDE_CLIENT_ID, claudeFile, sharedDb, startSubscriptionGateway, type SharedDb } from '../helpers/subscriptions';

type Gateway = Awaited<ReturnType<typeof startSubscriptionGateway>>;

/**
 * The `claude` pool as the claude_sub adapter will use it (the adapter itself comes with the
 * Anthropic surface): refresh against Anthropic's token endpoint (stand-in), revocation on
 * invalid_grant, the generic run() with 401 → refresh → retry and 429 → next account, state
 * across a restart. Accounts come from Claude Code's credentials format.
 */
describe.each(['sqlite', 'postgres'] as const)('Claude subscription pool on %s', (backend) => {
  const tokens = new OAuthTokenServer('claude', CLAUDE_CLIENT_ID);
  let tokenUrl: string;
  let db: SharedDb;
  const open: Gateway[] = [];
  const MODELS = 'models:\n  - id: demo\n    context_length: 10\n    route: [{ kind: mock }]\n';

  beforeAll(async () => {
    tokenUrl = await tokens.start();
  });
  afterAll(() => tokens.stop());
  beforeEach(async () => {
    db = await sharedDb(backend);
    tokens.refreshes.length = 0;
  });
  afterEach(async () => {
    for (const gw of open.splice(0)) await gw.close();
    await db.drop();
  });

  async function start(file?: string): Promise<Gateway> {
    const gw = await startSubscriptionGateway({ models: MODELS, db, claudeTokenUrl: tokenUrl, claudeFile: file });
    open.push(gw);
    return gw;
  }

  async function list(gw: Gateway): Promise<Array<{ id: string; name: string; status: string; last_error: string | null }>> {
    return (
      (await (await gw.admin('?provider=claude')).json()) as {
        data: Array<{ id: string; name: string; status: string; last_error: string | null }>;
      }
    ).data;
  }

  it('refreshes an expiring token with a JSON refresh_token grant, revokes on invalid_grant, and keeps the rotated token across a restart', async () => {
    // Expiring in 20 s: inside the refresh margin and too close for a request to go ahead without a refresh.
    const live = tokens.login({ ttlSeconds: 20 });
    const dead = tokens.login({ ttlSeconds: 20 });
    tokens.revoke(dead.refresh_token);
    const file = claudeFile(db.dir, [
      { name: 'a-live', login: live },
      { name: 'b-dead', login: dead },
    ]);
    const gw = await start(file);

    const first = await gw.pool.acquire('claude');
    expect(first.name).toBe('a-live');
    expect(first.accessToken).not.toBe(live.access_token);
    expect(tokens.accessValid(first.accessToken)).toBeDefined();
    // (The background sweep may have refreshed either account first; each is refreshed once.)
    const ofLive = tokens.refreshes.filter((r) => r.body.refresh_token === live.refresh_token);
    expect(ofLive).toHaveLength(1);
    expect(ofLive[0].headers['content-type']).toContain('application/json');
    expect(ofLive[0].body).toEqual({ grant_type: 'refresh_token', refresh_token: live.refresh_token, client_id: CLAUDE_CLIENT_ID });

    // Next in rotation is b-dead: its refresh is refused, it is revoked, a-live serves instead.
    const second = await gw.pool.acquire('claude');
    expect(second.name).toBe('a-live');
    expect(await list(gw)).toMatchObject([
      { name: 'a-live', status: 'active' },
      { name: 'b-dead', status: 'revoked', last_error: expect.stringContaining('invalid_grant') },
    ]);

    await gw.close();
    open.splice(0);
    const again = await start(file);
    expect((await list(again)).map((a) => [a.name, a.status])).toEqual([
      ['a-live', 'active'],
      ['b-dead', 'revoked'],
    ]);
    // The stored refresh token is the rotated one; the file's spent one would be refused.
    const [a] = await list(again);
    expect(await (await again.admin(`/${a.id}/refresh`, { method: 'POST' })).json()).toMatchObject({
      refreshed: true,
      account: { status: 'active' },
    });
    expect(tokens.refreshes.map((r) => r.body.refresh_token)).not.toContain(undefined);
    expect(new Set(tokens.refreshes.map((r) => r.body.refresh_token)).size).toBe(tokens.refreshes.length);
  });

  it('run(): a 401 refreshes once and retries with the new token; a 429 cools the account and moves on', async () => {
    const [x, y] = [tokens.login(), tokens.login()];
    const gw = await start(
      claudeFile(db.dir, [
        { name: 'x', login: x },
        { name: 'y', login: y },
      ]),
    );
    const seen: string[] = [];
    const unauthorizedOnce = (l: AccountLease): Promise<string> => {
      seen.push(l.accessToken);
      if (l.accessToken === x.access_token)
        return Promise.reject(new UpstreamError({ failure: 'http', upstreamStatus: 401, message: 'invalid bearer token' }));
      return Promise.resolve(`ok from ${l.name}`);
    };
    const first = await gw.pool.run('claude', new AbortController().signal, unauthorizedOnce);
    expect(first.value).toBe('ok from x');
    expect(seen[0]).toBe(x.access_token);
    expect(seen[1]).not.toBe(x.access_token);
    expect(tokens.refreshes).toHaveLength(1);

    const limited = (l: AccountLease): Promise<string> =>
      l.name === 'y'
        ? Promise.reject(new UpstreamError({ failure: 'http', upstreamStatus: 429, message: 'rate limited', retryAfterMs: 120_000 }))
        : Promise.resolve(`ok from ${l.name}`);
    const second = await gw.pool.run('claude', new AbortController().signal, limited);
    expect(second.value).toBe('ok from x');
    const ys = (await list(gw)).find((a) => a.name === 'y');
    expect(ys).toMatchObject({ status: 'cooldown', last_error: 'rate limited' });
  });

  it("run(): a refused token whose refresh fails tells the client which account, and the token endpoint's words only the operator", async () => {
    const login = tokens.login();
    tokens.revoke(login.refresh_token);
    const gw = await start(claudeFile(db.dir, [{ name: 'only', login }]));
    const refused = (): Promise<string> =>
      Promise.reject(new UpstreamError({ failure: 'http', upstreamStatus: 401, message: 'invalid bearer token' }));
    const err = (await gw.pool.run('claude', new AbortController().signal, refused).catch((e: unknown) => e)) as UpstreamError;
    expect(err).toBeInstanceOf(UpstreamError);
    const [account] = await list(gw);
    expect(err.message).toContain(account.id);
    expect(err.message).toContain('GET /admin/accounts');
    expect(err.message).not.toMatch(/invalid_grant|client_id|grant_type/);
    expect(account).toMatchObject({ status: 'revoked', last_error: expect.stringContaining('invalid_grant') });
  });
});
