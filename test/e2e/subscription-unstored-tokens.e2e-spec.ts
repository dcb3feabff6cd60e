import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { AccountPool } from '../../src/subscription/account-pool.service';
import { OAuthRefresher } from '../../src/subscription/oauth-refresh.service';
import { AccountStore } from '../../src/subscription/account-store.service';
import { CredentialVault } from '../../src/subscription/credential-vault.service';
import { CodexBackend } from '../fixtures/codex-backend';
import { type Login, OAuthTokenServer } from '../fixtures/oauth-token-server';
import { createTestDatabase, PG_ADMIN, type TestDatabase } from '../helpers/postgres';
import { TcpProxy } from '../helpers/tcp-proxy';
import { codexFile, CODEX_CLIENT_ID, eventually, sharedDb, startSubscriptionGateway, type SharedDb } from '../helpers/subscriptions';

type Gateway = Awaited<ReturnType<typeof startSubscriptionGateway>>;

/**
 * Tokens refreshed while PostgreSQL was unreachable are kept in memory until the periodic tick
 * stores them. Their refresh is the one that spent the stored refresh token, so when the database
 * is back, a refresh that comes before the tick (an expiring token, an upstream 401) must go on
 * from them, and store them, not fall back to the stored, spent ones: a refresh token used twice
 * gets the login revoked by Codex and Anthropic. The gateway reaches PostgreSQL through a proxy
 * that goes down and comes back; the tick is made too slow to run during a test.
 */
describe('subscription tokens refreshed while PostgreSQL was unreachable', () => {
  const tokens = new OAuthTokenServer('codex', CODEX_CLIENT_ID);
  const codex = new CodexBackend(tokens);
  let tokenUrl: string;
  let codexUrl: string;
  let pg: TestDatabase;
  let proxy: TcpProxy;
  let files: SharedDb;
  let gw: Gateway | undefined;

  beforeAll(async () => {
    tokenUrl = await tokens.start();
    codexUrl = await codex.start();
  });
  afterAll(async () => {
    await Promise.all([tokens.stop(), codex.stop()]);
  });
  beforeEach(async () => {
    tokens.release();
    tokens.refreshes.length = 0;
    tokens.reused = 0;
    tokens.accessTtlSeconds = 3600;
    codex.requests.length = 0;
    pg = await createTestDatabase();
    proxy = new TcpProxy(PG_ADMIN.host, PG_ADMIN.port);
    await proxy.start();
    files = await sharedDb('sqlite'); // only for its directory (the import file)
  });
  afterEach(async () => {
    tokens.release();
    await gw?.close();
    gw = undefined;
    await proxy.stop();
    await files.drop();
    await pg.drop();
  });

  async function boot(login: Login, env: Record<string, string> = {}): Promise<Gateway> {
    const auth = `${PG_ADMIN.user}${PG_ADMIN.password ? `:${PG_ADMIN.password}` : ''}`;
    gw = await startSubscriptionGateway({
      models: `models:\n  - id: codex/gpt\n    context_length: 1000\n    route: [{ kind: codex_sub, base_url: "${codexUrl}", provider_model_id: gpt-5.1-codex }]\n`,
      db: {
        ...files,
        env: {
          DB_BACKEND: 'postgres',
          DATABASE_URL: `postgres://${auth}@127.0.0.1:${proxy.port}/${pg.name}`,
          DB_CONNECT_TIMEOUT_MS: '5000',
        },
      },
      codexTokenUrl: tokenUrl,
      codexFile: codexFile(files.dir, [{ name: 'acct', login }]),
      // The tick (which stores pending tokens) does not come round during a test. One spool
      // directory for every gateway of a test, as for a gateway restarted on the same volume.
      env: { SUBSCRIPTION_SYNC_MS: '3600000', REQUEST_LOG_SPOOL_DIR: join(files.dir, 'spool'), ...env },
    });
    return gw;
  }

  const tokenSpools = () => readdirSync(join(files.dir, 'spool')).filter((n) => n.startsWith('subscription-tokens-'));

  const ask = (g: Gateway) => g.client().chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'hi' }] });

  /** Runs SQL on the test database directly (not through the proxy). */
  async function sql<T>(text: string, params: unknown[] = []): Promise<T[]> {
    const c = new Client({ connectionString: pg.url });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as T[];
    } finally {
      await c.end();
    }
  }

  async function stored(g: Gateway): Promise<{ version: number; refreshToken: string; status: string }> {
    const [row] = await sql<{ id: string; credentials: string; token_version: number; status: string }>(
      'SELECT id, credentials, token_version, status FROM subscription_accounts',
    );
    const creds = g.app.get(CredentialVault).open({ provider: 'codex', id: row.id }, row.credentials);
    return { version: row.token_version, refreshToken: creds.refreshToken, status: row.status };
  }

  /** The refresh token the stand-in minted last: the only one not yet spent. */
  const newestRefreshToken = () => tokens.issued.filter((t) => t.startsWith('rt_')).at(-1);

  /**
   * `start` sets off a refresh (and whatever waits for it); PostgreSQL goes away while the token
   * endpoint answers, so the new tokens cannot be stored; then it comes back.
   */
  async function refreshWhileDatabaseIsDown<T>(g: Gateway, start: () => Promise<T>): Promise<T> {
    const release = tokens.hold();
    const before = tokens.refreshes.length;
    const pending = start();
    await eventually(() => tokens.refreshes.length === before + 1, 'the refresh is on its way');
    await proxy.stop();
    release();
    const out = await pending;
    await proxy.start();
    const store = g.app.get(AccountStore);
    await eventually(() => store.answers(), 'the database answers again');
    return out;
  }

  it('an expiring token is refreshed from the unstored tokens, which are stored first; the spent refresh token is never sent', async () => {
    const login = tokens.login({ accountId: 'acct-exp' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.accessTtlSeconds = 20; // tokens from a refresh expire so soon that a request waits for the next refresh

    // A 401: the forced refresh's tokens cannot be stored; the retry uses them.
    tokens.invalidateAccess(login.access_token);
    const a = await refreshWhileDatabaseIsDown(g, () => ask(g));
    expect(a.choices[0].message.content).toBe('echo: hi');
    expect(codex.requests.map((r) => r.status)).toEqual([401, 200]);
    expect(await stored(g)).toMatchObject({ version: first.version, refreshToken: login.refresh_token }); // spent, still stored

    // Back, before the tick: the next request finds the unstored token about to expire.
    const b = await ask(g);
    expect(b.choices[0].message.content).toBe('echo: hi');
    expect(tokens.reused).toBe(0);
    expect(tokens.refreshes.map((r) => r.body.refresh_token).filter((t) => t === login.refresh_token)).toHaveLength(1);
    expect(tokens.refreshes).toHaveLength(2);
    expect(codex.requests.map((r) => r.status)).toEqual([401, 200, 200]);
    expect(await stored(g)).toEqual({ version: first.version + 2, refreshToken: newestRefreshToken(), status: 'active' });
  });

  it('after a 401, the forced refresh starts from the unstored tokens, which are stored first', async () => {
    const login = tokens.login({ accountId: 'acct-401' });
    const g = await boot(login);
    const first = await stored(g);

    // A 401: the forced refresh's tokens cannot be stored; the retry uses them.
    tokens.invalidateAccess(login.access_token);
    const a = await refreshWhileDatabaseIsDown(g, () => ask(g));
    expect(a.choices[0].message.content).toBe('echo: hi');
    expect(codex.requests.map((r) => r.status)).toEqual([401, 200]);
    const unstoredAccess = codex.requests[1].headers.authorization!.slice('Bearer '.length);
    expect(await stored(g)).toMatchObject({ version: first.version, refreshToken: login.refresh_token });

    // Back, before the tick: their access token is refused in turn.
    tokens.invalidateAccess(unstoredAccess);
    const b = await ask(g);
    expect(b.choices[0].message.content).toBe('echo: hi');
    expect(codex.requests.map((r) => r.status)).toEqual([401, 200, 401, 200]);
    expect(tokens.reused).toBe(0);
    expect(tokens.refreshes.map((r) => r.body.refresh_token)).not.toContain(undefined);
    expect(new Set(tokens.refreshes.map((r) => r.body.refresh_token)).size).toBe(2);
    expect(await stored(g)).toEqual({ version: first.version + 2, refreshToken: newestRefreshToken(), status: 'active' });
  });

  it("waiting for another process's lease does not drop the unstored tokens when the stored version has not moved", async () => {
    const login = tokens.login({ accountId: 'acct-wait' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    const unstoredAccess = codex.requests[1].headers.authorization!.slice('Bearer '.length);

    // Another process holds the lease for a moment and gives it up without new tokens (its
    // refresh failed): the stored version is still the one the unstored tokens descend from.
    await sql(
      `UPDATE subscription_accounts SET refresh_lock_owner = 'another-process', refresh_lock_until = now() + interval '1500 milliseconds'`,
    );
    // Given up as a failed refresh gives it up: released (a lease left to lapse is waited on longer, above).
    const released = new Promise((r) => setTimeout(r, 1000)).then(() =>
      sql(
        `UPDATE subscription_accounts SET refresh_lock_owner = NULL, refresh_lock_until = NULL WHERE refresh_lock_owner = 'another-process'`,
      ),
    );
    tokens.invalidateAccess(unstoredAccess);
    const b = await ask(g);
    await released;
    expect(b.choices[0].message.content).toBe('echo: hi');
    expect(codex.requests.map((r) => r.status)).toEqual([401, 200, 401, 200]);
    expect(tokens.reused).toBe(0);
    expect(await stored(g)).toEqual({ version: first.version + 2, refreshToken: newestRefreshToken(), status: 'active' });
  });

  // Another replica refreshed while the database was away for longer than its lease: the stored
  // refresh token is spent, its lease lapsed unrenewed (found so, or lapsing while this process
  // polls for it), and its sync stores the new tokens soon.
  it.each([
    ['found lapsed', "now() - interval '1 second'", 500],
    ['lapsing while polled for', "now() + interval '2 seconds'", 3000],
  ])(
    'waits for the sync of a process whose lease lapsed unrenewed (%s) before sending the refresh token it spent',
    async (_, leaseUntil, storedAfterMs) => {
      const login = tokens.login({ accountId: `acct-lapsed-${storedAfterMs}` });
      const g = await boot(login, { SUBSCRIPTION_SYNC_MS: '400' });
      const first = await stored(g);
      const [{ id }] = await sql<{ id: string }>('SELECT id FROM subscription_accounts');
      const ghost = await g.app
        .get(OAuthRefresher)
        .refresh('codex', { accessToken: login.access_token, refreshToken: login.refresh_token });
      await sql(`UPDATE subscription_accounts SET refresh_lock_owner = 'replica-a', refresh_lock_until = ${leaseUntil}`);
      const storedByGhost = (async () => {
        await new Promise((r) => setTimeout(r, storedAfterMs));
        const sealed = g.app.get(CredentialVault).seal({ provider: 'codex', id }, ghost.credentials);
        await g.app.get(AccountStore).commitRefresh(id, sealed, ghost.expiresAt, first.version, first.version + 1);
      })();
      tokens.invalidateAccess(login.access_token);
      const b = await ask(g);
      await storedByGhost;
      expect(b.choices[0].message.content).toBe('echo: hi');
      // Before, the spent refresh token went out at once and the provider revoked the login.
      expect(tokens.reused).toBe(0);
      expect(codex.requests.at(-1)!.headers.authorization).toBe(`Bearer ${ghost.credentials.accessToken}`);
      expect(await stored(g)).toMatchObject({ version: first.version + 1, status: 'active' });
    },
  );

  it('keeps the refresh lease while tokens the database refused to store wait, so no other process sends the spent refresh token', async () => {
    const login = tokens.login({ accountId: 'acct-refused' });
    const g = await boot(login);
    const first = await stored(g);
    // The database answers, but the write of the refreshed tokens fails once (a connection reset at commit).
    await sql(`CREATE SEQUENCE fail_commit;
      CREATE FUNCTION fail_commit() RETURNS trigger AS $$ BEGIN
        IF NEW.token_version <> OLD.token_version AND nextval('fail_commit') <= 2 THEN RAISE EXCEPTION 'connection reset (test)'; END IF;
        RETURN NEW; END $$ LANGUAGE plpgsql;
      CREATE TRIGGER fail_commit BEFORE UPDATE ON subscription_accounts FOR EACH ROW EXECUTE FUNCTION fail_commit();`);
    tokens.invalidateAccess(login.access_token);
    const a = await ask(g);
    expect(a.choices[0].message.content).toBe('echo: hi');
    expect(await stored(g)).toMatchObject({ version: first.version, refreshToken: login.refresh_token }); // spent, still stored
    // The lease is still this process's: another one trying to refresh waits, rather than send the spent token.
    const [held] = await sql<{ refresh_lock_owner: string | null; until: boolean }>(
      'SELECT refresh_lock_owner, refresh_lock_until > now() AS until FROM subscription_accounts',
    );
    expect(held.refresh_lock_owner).not.toBeNull();
    expect(held.until).toBe(true);
    const other = g.app.get(AccountStore);
    const [{ id }] = await sql<{ id: string }>('SELECT id FROM subscription_accounts');
    expect(await other.tryLock(id, 'another-process', 60_000)).toBe(false);
    // A refresh before the tick stores them first, and fails to (the second failure): the lease stays.
    await g.app
      .get(AccountPool)
      .refreshNow(id)
      .catch(() => undefined);
    expect(await other.tryLock(id, 'another-process', 60_000)).toBe(false);

    // The tick stores them, and gives the lease back.
    await g.app.get(AccountPool).tick();
    expect(await stored(g)).toEqual({ version: first.version + 1, refreshToken: newestRefreshToken(), status: 'active' });
    const [after] = await sql<{ refresh_lock_owner: string | null }>('SELECT refresh_lock_owner FROM subscription_accounts');
    expect(after.refresh_lock_owner).toBeNull();
    expect(tokens.reused).toBe(0);
  });

  it("one account whose tokens the database keeps refusing holds back no other account's, nor the sync", async () => {
    const stuck = tokens.login({ accountId: 'acct-stuck' });
    const fine = tokens.login({ accountId: 'acct-fine' });
    const auth = `${PG_ADMIN.user}${PG_ADMIN.password ? `:${PG_ADMIN.password}` : ''}`;
    gw = await startSubscriptionGateway({
      models: `models:\n  - id: codex/gpt\n    context_length: 1000\n    route: [{ kind: codex_sub, base_url: "${codexUrl}", provider_model_id: gpt-5.1-codex }]\n`,
      db: { ...files, env: { DB_BACKEND: 'postgres', DATABASE_URL: `postgres://${auth}@127.0.0.1:${proxy.port}/${pg.name}` } },
      codexTokenUrl: tokenUrl,
      codexFile: codexFile(files.dir, [
        { name: 'a-stuck', login: stuck },
        { name: 'b-fine', login: fine },
      ]),
      env: { SUBSCRIPTION_SYNC_MS: '3600000', REQUEST_LOG_SPOOL_DIR: join(files.dir, 'spool') },
    });
    const pool = gw.app.get(AccountPool);
    const ids = new Map((await sql<{ id: string; name: string }>('SELECT id, name FROM subscription_accounts')).map((r) => [r.name, r.id]));
    // The first account's new tokens are always refused; the second's once.
    await sql(`CREATE SEQUENCE fail_commit;
      CREATE FUNCTION fail_commit() RETURNS trigger AS $$ BEGIN
        IF NEW.token_version <> OLD.token_version AND (NEW.name = 'a-stuck' OR nextval('fail_commit') <= 1) THEN
          RAISE EXCEPTION 'refused (test)'; END IF;
        RETURN NEW; END $$ LANGUAGE plpgsql;
      CREATE TRIGGER fail_commit BEFORE UPDATE ON subscription_accounts FOR EACH ROW EXECUTE FUNCTION fail_commit();`);
    for (const name of ['a-stuck', 'b-fine']) await pool.refreshNow(ids.get(name)!).catch(() => undefined);
    const versions = async () =>
      new Map(
        (await sql<{ name: string; token_version: number }>('SELECT name, token_version FROM subscription_accounts')).map((r) => [
          r.name,
          r.token_version,
        ]),
      );
    const before = await versions();
    // An account added meanwhile (by another replica, an import): the sync should find it.
    await sql(
      `INSERT INTO subscription_accounts (id, provider, name, credentials, status, token_version, created_at, updated_at)
       SELECT gen_random_uuid(), provider, 'c-new', credentials, status, 1, now(), now() FROM subscription_accounts WHERE name = 'b-fine'`,
    );

    await pool.tick();
    const after = await versions();
    expect(after.get('a-stuck')).toBe(before.get('a-stuck')); // still refused: kept in memory, its lease held
    expect(after.get('b-fine')).toBe(before.get('b-fine')! + 1); // stored all the same
    const leases = new Map(
      (await sql<{ name: string; refresh_lock_owner: string | null }>('SELECT name, refresh_lock_owner FROM subscription_accounts')).map(
        (r) => [r.name, r.refresh_lock_owner],
      ),
    );
    expect(leases.get('a-stuck')).not.toBeNull();
    expect(leases.get('b-fine')).toBeNull();
    // The sync ran after them and read the new row (the pool's own map: it has no listing of its own).
    const known = (pool as unknown as { accounts: Map<string, { name: string }> }).accounts;
    expect([...known.values()].map((a) => a.name)).toContain('c-new');
    expect(tokens.reused).toBe(0);
  });

  it('syncs, renewing the leases kept for unstored tokens, well within their 150 s whatever SUBSCRIPTION_SYNC_MS says', async () => {
    // The tests set an hour so that no sync comes round; a lease kept that long lapsed between two.
    const g = await boot(tokens.login({ accountId: 'acct-period' }));
    const pool: unknown = g.app.get(AccountPool);
    expect((pool as { timer: { _idleTimeout: number } }).timer._idleTimeout).toBe(50_000);
  });

  it("the tick stores the unstored tokens without taking another process's lease", async () => {
    const login = tokens.login({ accountId: 'acct-tick' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));

    // Another process is refreshing the account (it holds the lease) when the tick comes round.
    await sql(
      `UPDATE subscription_accounts SET refresh_lock_owner = 'another-process', refresh_lock_until = now() + interval '60 seconds'`,
    );
    await g.app.get(AccountPool).tick();
    expect(await stored(g)).toEqual({ version: first.version + 1, refreshToken: newestRefreshToken(), status: 'active' });
    const [lease] = await sql<{ refresh_lock_owner: string | null }>('SELECT refresh_lock_owner FROM subscription_accounts');
    expect(lease.refresh_lock_owner).toBe('another-process');
  });

  it('shutdown stores the unstored tokens when the database is back before the tick', async () => {
    const login = tokens.login({ accountId: 'acct-stop' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    expect(await stored(g)).toMatchObject({ version: first.version, refreshToken: login.refresh_token }); // spent, still stored
    await g.close();
    gw = undefined;
    // The refresh token that the refresh gave, not the spent one: the account works after a restart.
    expect(await stored(g)).toMatchObject({ refreshToken: newestRefreshToken(), status: 'active' });
    // Spooled first, then stored: the spool file is gone again.
    expect(tokenSpools()).toEqual([]);
  });

  it('shutdown while the database is still away spools the unstored tokens, sealed; the next start stores them before any refresh', async () => {
    const login = tokens.login({ accountId: 'acct-spool' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    const unstoredRefresh = newestRefreshToken()!;
    const unstoredAccess = codex.requests[1].headers.authorization!.slice('Bearer '.length);

    await proxy.stop();
    await g.close();
    gw = undefined;
    expect(await stored(g)).toMatchObject({ version: first.version, refreshToken: login.refresh_token }); // spent, still stored
    const [spool] = tokenSpools();
    expect(tokenSpools()).toHaveLength(1);
    const path = join(files.dir, 'spool', spool);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const text = readFileSync(path, 'utf8');
    expect(text).not.toContain(unstoredRefresh); // sealed, as in the database
    expect(text).not.toContain(unstoredAccess);

    // Restarted with the database: the spooled tokens are stored, and used, with no refresh.
    await proxy.start();
    const g2 = await boot(login);
    expect(await stored(g2)).toEqual({ version: first.version + 1, refreshToken: unstoredRefresh, status: 'active' });
    expect(tokenSpools()).toHaveLength(0);
    // The lease the stopped process held to store them is given back: refreshes need not wait
    // for it to lapse (150 s).
    expect(await sql('SELECT refresh_lock_owner FROM subscription_accounts')).toEqual([{ refresh_lock_owner: null }]);
    const refreshes = tokens.refreshes.length;
    const b = await ask(g2);
    expect(b.choices[0].message.content).toBe('echo: hi');
    expect(codex.requests.at(-1)!.headers.authorization).toBe(`Bearer ${unstoredAccess}`);
    expect(tokens.refreshes).toHaveLength(refreshes);
    expect(tokens.reused).toBe(0);
  });

  it('shutdown behind a silent database spools the unstored tokens before it tries the database', async () => {
    const login = tokens.login({ accountId: 'acct-spool-silent' });
    const g = await boot(login);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    proxy.hold();
    gw = undefined;
    const closing = g.close();
    // On disk at once, not after the database's query timeout (10 s): a kill now loses nothing.
    await eventually(() => tokenSpools().length === 1, 'the spool file', 2000);
    proxy.release();
    await closing;
  }, 30_000);

  it('a replica that is running stores the spool another left, at its next sync', async () => {
    const login = tokens.login({ accountId: 'acct-spool-replica' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    const unstoredRefresh = newestRefreshToken()!;
    gw = undefined;
    const other = await boot(login); // a second replica, up while the first still runs
    await proxy.stop();
    await g.close();
    expect(tokenSpools()).toHaveLength(1);
    await proxy.start();
    await eventually(() => other.app.get(AccountStore).answers(), 'the database answers again');
    await other.pool.tick();
    expect(await stored(other)).toEqual({ version: first.version + 1, refreshToken: unstoredRefresh, status: 'active' });
    expect(tokenSpools()).toHaveLength(0);
  });

  it('a spool file the database refuses, or cannot read, is set aside and holds back no account', async () => {
    const login = tokens.login({ accountId: 'acct-spool-bad' });
    let g = await boot(login);
    await g.close();
    gw = undefined;
    const dir = join(files.dir, 'spool');
    const entry = { id: 'acc_gone', provider: 'codex', name: 'gone', sealed: 'x', expiresAt: null, fromVersion: 1, toVersion: 2 };
    // PostgreSQL refuses U+0000 in text: a refusal of the data, not an outage.
    writeFileSync(join(dir, 'subscription-tokens-1-refused.json'), JSON.stringify({ tokens: [{ ...entry, sealed: 'a\u0000b' }] }));
    // An expiry no date can hold (JSON reads 1e400 as Infinity).
    writeFileSync(
      join(dir, 'subscription-tokens-1-bad.json'),
      JSON.stringify({ tokens: [entry] }).replace('"expiresAt":null', '"expiresAt":1e400'),
    );
    g = await boot(login);
    expect(g.pool.usable('codex')).toMatchObject({ total: 1 });
    expect((await ask(g)).choices[0].message.content).toBe('echo: hi');
    expect(tokenSpools().sort()).toEqual(['subscription-tokens-1-bad.json.unreadable', 'subscription-tokens-1-refused.json.unreadable']);
  });

  it('spooled tokens do not overwrite a login imported before the restart', async () => {
    const login = tokens.login({ accountId: 'acct-spool-import' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    await proxy.stop();
    await g.close();
    gw = undefined;
    expect(tokenSpools()).toHaveLength(1);
    // The operator logs the account in again meanwhile (another replica, or SQL).
    await proxy.start();
    await sql('UPDATE subscription_accounts SET token_version = token_version + 1');

    const g2 = await boot(login);
    expect(tokenSpools()).toHaveLength(0);
    expect(await stored(g2)).toMatchObject({ version: first.version + 1, refreshToken: login.refresh_token });
    // Dropped, they still give back the stopped process's lease: the new login's first refresh
    // need not wait for it to lapse.
    expect(await sql('SELECT refresh_lock_owner FROM subscription_accounts')).toEqual([{ refresh_lock_owner: null }]);
  });

  it('a login imported while the tokens were unstored still wins over them', async () => {
    const login = tokens.login({ accountId: 'acct-import' });
    const g = await boot(login);
    const first = await stored(g);
    tokens.invalidateAccess(login.access_token);
    await refreshWhileDatabaseIsDown(g, () => ask(g));
    const unstoredAccess = codex.requests[1].headers.authorization!.slice('Bearer '.length);
    const unstoredRefresh = newestRefreshToken();

    // A new login for the account through the admin API: the stored version moves on.
    const fresh = tokens.login({ accountId: 'acct-import' });
    const res = await g.admin('/import', {
      method: 'POST',
      body: JSON.stringify({
        provider: 'codex',
        accounts: [
          {
            name: 'acct',
            tokens: {
              id_token: fresh.id_token,
              access_token: fresh.access_token,
              refresh_token: fresh.refresh_token,
              account_id: fresh.accountId,
            },
          },
        ],
      }),
    });
    expect(await res.json()).toMatchObject({ updated: ['acct'] });
    expect(await stored(g)).toMatchObject({ version: first.version + 1, refreshToken: fresh.refresh_token });

    // The unstored tokens' access token is refused: the refresh goes on from the imported login,
    // and the unstored tokens are dropped, never stored nor refreshed.
    tokens.invalidateAccess(unstoredAccess);
    const b = await ask(g);
    expect(b.choices[0].message.content).toBe('echo: hi');
    expect(tokens.reused).toBe(0);
    expect(tokens.refreshes.map((r) => r.body.refresh_token)).not.toContain(unstoredRefresh);
    const last = await stored(g);
    expect(last).toMatchObject({ refreshToken: newestRefreshToken(), status: 'active' });
    expect(last.refreshToken).not.toBe(unstoredRefresh);
  });
});
