import { randomBytes } from 'node:crypto';
import { UpstreamError } from '../../src/common/errors';
import { readFileSync, writeFileSync } from 'node:fs';
import { AccountImporter } from '../../src/subscription/account-importer.service';
import { AccountStore } from '../../src/subscription/account-store.service';
import { CredentialVault } from '../../src/subscription/credential-vault.service';
import { SubscriptionAccount } from '../../src/subscription/entities/subscription-account.entity';
import { SubscriptionAccountImport } from '../../src/subscription/entities/subscription-account-import.entity';
import { TokenCipher } from '../../src/subscription/token-cipher';
import { DatabaseService } from '../../src/storage/database.service';
import { OAuthTokenServer, type Login } from '../fixtures/oauth-token-server';
import {
  CLAUDE_CLIENT_ID,
  claudeFile,
  ENCRYPTION_KEY,
  eventually,
  sharedDb,
  startSubscriptionGateway,
  type SharedDb,
} from '../helpers/subscriptions';

type Gateway = Awaited<ReturnType<typeof startSubscriptionGateway>>;

/**
 * The accounts import file is read at every start of every process (a worker restarted by the
 * cluster too). Each login in it is applied once: never again over newer state (tokens rotated
 * since, a login an admin imported, an account an admin deleted), and once between processes
 * that import it at the same moment.
 */
describe.each(['sqlite', 'postgres'] as const)('the accounts import file on %s', (backend) => {
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
    tokens.release();
    db = await sharedDb(backend);
    tokens.reused = 0;
  });
  afterEach(async () => {
    for (const gw of open.splice(0)) await gw.close();
    await db.drop();
  });

  async function start(file: string, key = ENCRYPTION_KEY): Promise<Gateway> {
    const gw = await startSubscriptionGateway({
      models: MODELS,
      db,
      claudeTokenUrl: tokenUrl,
      claudeFile: file,
      env: { SUBSCRIPTION_ENCRYPTION_KEY: key },
    });
    open.push(gw);
    return gw;
  }

  /** Stops `gw` and starts a gateway on the same database and file, as a restarted worker does (with `key`, as after a rotation). */
  async function restart(gw: Gateway, file: string, key?: string): Promise<Gateway> {
    open.splice(open.indexOf(gw), 1);
    await gw.close();
    return start(file, key);
  }

  /** Rewrites `file` in place with these logins. */
  function rewrite(file: string, logins: Array<{ name: string; login: Login }>): void {
    writeFileSync(file, readFileSync(claudeFile(db.dir, logins)));
  }

  async function list(gw: Gateway): Promise<Array<{ id: string; name: string; status: string }>> {
    return ((await (await gw.admin('?provider=claude')).json()) as { data: Array<{ id: string; name: string; status: string }> }).data;
  }

  async function refresh(gw: Gateway, id: string): Promise<unknown> {
    return (await gw.admin(`/${id}/refresh`, { method: 'POST' })).json();
  }

  it('an account deleted through the admin API stays deleted when the gateway starts again with the same file', async () => {
    const file = claudeFile(db.dir, [
      { name: 'team-a', login: tokens.login() },
      { name: 'team-b', login: tokens.login() },
    ]);
    const gw = await start(file);
    const [a] = await list(gw);
    expect(a.name).toBe('team-a');
    expect((await gw.admin(`/${a.id}`, { method: 'DELETE' })).status).toBeLessThan(300);

    const again = await restart(gw, file);
    expect((await list(again)).map((x) => x.name)).toEqual(['team-b']);
  });

  it('a login imported through the admin API is not rolled back to the spent one the file still holds', async () => {
    const first = tokens.login();
    const file = claudeFile(db.dir, [{ name: 'team-a', login: first }]);
    const gw = await start(file);
    const [a] = await list(gw);
    // The gateway refreshes: the file's refresh token is spent from now on.
    expect(await refresh(gw, a.id)).toMatchObject({ refreshed: true });
    // The operator signs in again and imports that login through the admin API.
    const second = tokens.login();
    const body = {
      provider: 'claude',
      accounts: [{ name: 'team-a', access_token: second.access_token, refresh_token: second.refresh_token, expires_at: second.expiresAt }],
    };
    expect(await (await gw.admin('/import', { method: 'POST', body: JSON.stringify(body) })).json()).toMatchObject({ updated: ['team-a'] });

    const again = await restart(gw, file);
    expect((await again.pool.acquire('claude')).accessToken).toBe(second.access_token);
    expect(await refresh(again, a.id)).toMatchObject({ refreshed: true, account: { status: 'active' } });
    expect(tokens.reused).toBe(0);
  });

  it('a new login in the file is applied once; the file put back to an older login changes nothing', async () => {
    const first = tokens.login();
    const file = claudeFile(db.dir, [{ name: 'team-a', login: first }]);
    const gw = await start(file);
    const [a] = await list(gw);
    expect(await refresh(gw, a.id)).toMatchObject({ refreshed: true });

    const second = tokens.login();
    rewrite(file, [{ name: 'team-a', login: second }]);
    const withSecond = await restart(gw, file);
    expect((await withSecond.pool.acquire('claude')).accessToken).toBe(second.access_token);
    expect(await refresh(withSecond, a.id)).toMatchObject({ refreshed: true });
    const refreshed = (await withSecond.pool.acquire('claude')).accessToken;

    // An older copy of the file comes back (a backup, a config-management run).
    rewrite(file, [{ name: 'team-a', login: first }]);
    const withFirst = await restart(withSecond, file);
    expect((await withFirst.pool.acquire('claude')).accessToken).toBe(refreshed);
    expect(await refresh(withFirst, a.id)).toMatchObject({ refreshed: true, account: { status: 'active' } });
    expect(tokens.reused).toBe(0);
  });

  (backend === 'postgres' ? it : it.skip)(
    "times the refresh lease by the database's clock: a replica whose clock runs ahead does not take a lease still held",
    async () => {
      const gw = await start(claudeFile(db.dir, [{ name: 'team-a', login: tokens.login() }]));
      const [acc] = await list(gw);
      const store = gw.app.get(AccountStore);
      expect(await store.tryLock(acc.id, 'replica-a', 150_000)).toBe(true);
      // Replica B's clock 200 s ahead: by its clock the lease had lapsed, and both spent one refresh token.
      const ahead = jest.spyOn(Date, 'now').mockReturnValue(Date.now() + 200_000);
      try {
        expect(await store.tryLock(acc.id, 'replica-b', 150_000)).toBe(false);
      } finally {
        ahead.mockRestore();
      }
      await store.unlock(acc.id, 'replica-a');
      expect(await store.tryLock(acc.id, 'replica-b', 150_000)).toBe(true);
    },
  );

  it('two processes importing the same new login at the same moment apply it once', async () => {
    const file = claudeFile(db.dir, [{ name: 'team-a', login: tokens.login() }]);
    const a = await start(file);
    const b = await start(file);
    const [acc] = await list(a);
    const store = a.app.get(AccountStore);
    const before = await store.tokenVersion(acc.id);

    // As two workers starting together would: both read the file, which now has a new login,
    // and both have read the account before either writes.
    rewrite(file, [{ name: 'team-a', login: tokens.login() }]);
    let reads = 0;
    let bothRead!: () => void;
    const barrier = new Promise<void>((r) => (bothRead = r));
    for (const gw of [a, b]) {
      const s = gw.app.get(AccountStore);
      const findByName = s.findByName.bind(s);
      s.findByName = async (...args) => {
        const row = await findByName(...args);
        if (++reads === 2) bothRead();
        await barrier;
        return row;
      };
    }
    await Promise.all([a.app.get(AccountImporter).importFiles(), b.app.get(AccountImporter).importFiles()]);
    expect(await store.tokenVersion(acc.id)).toBe(before! + 1);
  });

  it('a login imported while a refresh is in flight is kept; the refresh of the older login is dropped', async () => {
    const first = tokens.login();
    const file = claudeFile(db.dir, [{ name: 'team-a', login: first }]);
    const gw = await start(file);
    const [a] = await list(gw);

    // The refresh has read the stored tokens under its lease and waits for the token endpoint...
    const sent = tokens.refreshes.length;
    const release = tokens.hold();
    const refreshing = refresh(gw, a.id);
    await eventually(() => tokens.refreshes.length > sent, 'the refresh to reach the token endpoint');
    // ...when the operator imports a new login for the same account (imports do not wait for the lease).
    const second = tokens.login();
    const body = {
      provider: 'claude',
      accounts: [{ name: 'team-a', access_token: second.access_token, refresh_token: second.refresh_token, expires_at: second.expiresAt }],
    };
    expect(await (await gw.admin('/import', { method: 'POST', body: JSON.stringify(body) })).json()).toMatchObject({ updated: ['team-a'] });
    release();
    await refreshing;

    // The stored login is the imported one, in this process and for any other.
    const stored = await gw.app.get(AccountStore).sealedCredentials(a.id);
    expect(gw.app.get(CredentialVault).open({ provider: 'claude', id: a.id }, stored!.credentials)).toMatchObject({
      accessToken: second.access_token,
      refreshToken: second.refresh_token,
    });
    expect((await gw.pool.acquire('claude')).accessToken).toBe(second.access_token);
    const again = await restart(gw, file);
    expect((await again.pool.acquire('claude')).accessToken).toBe(second.access_token);
    expect(await refresh(again, a.id)).toMatchObject({ refreshed: true, account: { status: 'active' } });
    expect(tokens.reused).toBe(0);
  });

  it('rotating SUBSCRIPTION_ENCRYPTION_KEY does not apply the file again; a new login in it still applies once', async () => {
    const file = claudeFile(db.dir, [{ name: 'team-a', login: tokens.login() }]);
    const gw = await start(file);
    const [a] = await list(gw);
    // The gateway refreshes: the file's refresh token is spent from now on.
    expect(await refresh(gw, a.id)).toMatchObject({ refreshed: true });
    const store = gw.app.get(AccountStore);
    const version = await store.tokenVersion(a.id);

    const rotated = await restart(gw, file, randomBytes(32).toString('base64'));
    expect(await rotated.app.get(AccountStore).tokenVersion(a.id)).toBe(version);

    const second = tokens.login();
    rewrite(file, [{ name: 'team-a', login: second }]);
    const key = randomBytes(32).toString('base64');
    const withSecond = await restart(rotated, file, key);
    expect(await withSecond.app.get(AccountStore).tokenVersion(a.id)).toBe(version! + 1);
    expect((await withSecond.pool.acquire('claude')).accessToken).toBe(second.access_token);
    const once = await restart(withSecond, file, key);
    expect(await once.app.get(AccountStore).tokenVersion(a.id)).toBe(version! + 1);
  });

  it('an account whose stored login cannot be opened is not promised as usable once its cooldown ends', async () => {
    const file = claudeFile(db.dir, [{ name: 'team-a', login: tokens.login() }]);
    const gw = await start(file);
    gw.pool.rateLimited(await gw.pool.acquire('claude'), 'rate limited', Date.now() + 3_600_000);
    expect((await list(gw))[0]).toMatchObject({ status: 'cooldown', credentials_error: null });
    // Started with another key: the stored login cannot be opened, and the file is not applied again.
    const rotated = await restart(gw, file, randomBytes(32).toString('base64'));
    const err = (await rotated.pool.acquire('claude').catch((e: unknown) => e)) as UpstreamError;
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.upstreamStatus).not.toBe(429);
    expect(err.message).toMatch(/no usable claude subscription account \(1 unreadable\)/);
    // The admin view says why, whatever the status says.
    expect((await list(rotated))[0]).toMatchObject({ credentials_error: expect.stringMatching(/.+/) });
  });

  it('logins recorded under the keyed fingerprint of earlier versions are not applied again, after the upgrade or a key rotation', async () => {
    const first = tokens.login();
    const file = claudeFile(db.dir, [{ name: 'team-a', login: first }]);
    const gw = await start(file);
    const [a] = await list(gw);
    expect(await refresh(gw, a.id)).toMatchObject({ refreshed: true });
    // The database as an earlier version left it: logins recorded by an HMAC under the key.
    const legacy = TokenCipher.fromText(ENCRYPTION_KEY).fingerprint(first.refresh_token);
    const ds = gw.app.get(DatabaseService).dataSource!;
    await ds.getRepository(SubscriptionAccountImport).delete({ provider: 'claude', name: 'team-a' });
    await ds
      .getRepository(SubscriptionAccountImport)
      .insert({ provider: 'claude', name: 'team-a', fingerprint: legacy, imported_at: new Date() });
    await ds.getRepository(SubscriptionAccount).update({ id: a.id }, { import_fingerprint: legacy });
    const version = await gw.app.get(AccountStore).tokenVersion(a.id);

    const upgraded = await restart(gw, file);
    expect(await upgraded.app.get(AccountStore).tokenVersion(a.id)).toBe(version);
    // Recognised once by the old fingerprint, the login is known by the new one too.
    const rotated = await restart(upgraded, file, randomBytes(32).toString('base64'));
    expect(await rotated.app.get(AccountStore).tokenVersion(a.id)).toBe(version);
    expect(tokens.reused).toBe(0);
  });
});
