import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountPool } from '../../src/subscription/account-pool.service';
import type { Login } from '../fixtures/oauth-token-server';
import { startGateway, type GatewayOptions, type TestGateway } from './gateway';
import { createTestDatabase, type TestDatabase } from './postgres';

export const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
export const ENCRYPTION_KEY = randomBytes(32).toString('base64');
export const CODEX_CLIENT_ID = 'app_standin_codex';
export const CLAUDE_CLIENT_ID = 'standin-claude-client';

/** A database that outlives gateways (restarts, replicas): an SQLite file or a fresh PostgreSQL database. */
export interface SharedDb {
  env: Record<string, string>;
  dir: string;
  drop(): Promise<void>;
}

export async function sharedDb(backend: 'sqlite' | 'postgres'): Promise<SharedDb> {
  const dir = mkdtempSync(join(tmpdir(), 'hi-sub-'));
  let pg: TestDatabase | undefined;
  if (backend === 'postgres') pg = await createTestDatabase();
  return {
    dir,
    env: pg ? pg.env : { DB_BACKEND: 'sqlite', DB_SQLITE_PATH: join(dir, 'shared.sqlite') },
    async drop() {
      await pg?.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Codex's auth.json shape, one entry per login, with names; `bom`: saved with a byte-order mark, as some Windows editors do. */
export function codexFile(dir: string, logins: Array<{ name: string; login: Login }>, bom = false): string {
  const path = join(dir, `codex_accounts.${randomBytes(4).toString('hex')}.json`);
  const accounts = logins.map(({ name, login }) => ({
    name,
    auth_mode: 'chatgpt',
    OPENAI_API_KEY: null,
    tokens: { id_token: login.id_token, access_token: login.access_token, refresh_token: login.refresh_token, account_id: login.accountId },
    last_refresh: new Date().toISOString(),
  }));
  writeFileSync(path, `${bom ? '\uFEFF' : ''}${JSON.stringify({ accounts }, null, 2)}`);
  return path;
}

/** Claude Code's credentials shape, one entry per login. */
export function claudeFile(dir: string, logins: Array<{ name: string; login: Login }>): string {
  const path = join(dir, `claude_accounts.${randomBytes(4).toString('hex')}.json`);
  const accounts = logins.map(({ name, login }) => ({
    name,
    claudeAiOauth: {
      accessToken: login.access_token,
      refreshToken: login.refresh_token,
      expiresAt: login.expiresAt,
      scopes: ['user:inference', 'user:profile'],
    },
  }));
  writeFileSync(path, JSON.stringify({ accounts }, null, 2));
  return path;
}

export interface SubscriptionGatewayOptions extends GatewayOptions {
  db: SharedDb;
  codexTokenUrl?: string;
  claudeTokenUrl?: string;
  codexFile?: string;
  claudeFile?: string;
}

/** A gateway with the subscription settings pointed at the stand-ins, its pool loaded. */
export async function startSubscriptionGateway(
  opts: SubscriptionGatewayOptions,
): Promise<TestGateway & { pool: AccountPool; admin(path: string, init?: RequestInit): Promise<Response> }> {
  const gw = await startGateway({
    ...opts,
    env: {
      ...opts.db.env,
      ADMIN_TOKEN,
      SUBSCRIPTION_ENCRYPTION_KEY: ENCRYPTION_KEY,
      SUBSCRIPTION_CODEX_TOKEN_URL: opts.codexTokenUrl ?? 'http://127.0.0.1:9/v1/oauth/token',
      SUBSCRIPTION_CODEX_CLIENT_ID: CODEX_CLIENT_ID,
      SUBSCRIPTION_CLAUDE_TOKEN_URL: opts.claudeTokenUrl ?? 'http://127.0.0.1:9/v1/oauth/token',
      SUBSCRIPTION_CLAUDE_CLIENT_ID: CLAUDE_CLIENT_ID,
      SUBSCRIPTION_CODEX_ACCOUNTS_FILE: opts.codexFile ?? join(opts.db.dir, 'no-codex.json'),
      SUBSCRIPTION_CLAUDE_ACCOUNTS_FILE: opts.claudeFile ?? join(opts.db.dir, 'no-claude.json'),
      SUBSCRIPTION_SYNC_MS: '100',
      ...opts.env,
    },
  });
  const pool = gw.app.get(AccountPool);
  await pool.ready();
  return {
    ...gw,
    pool,
    admin: (path, init = {}) =>
      fetch(`${gw.url}/admin/accounts${path}`, {
        ...init,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(init.body ? { 'content-type': 'application/json' } : {}),
          ...(init.headers as Record<string, string> | undefined),
        },
      }),
  };
}

/** Polls `check` until it returns true (tolerant of slow machines; no timing is asserted). */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
