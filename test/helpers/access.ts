import Redis from 'ioredis';
import type { TestGateway } from './gateway';

export const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
export const KEY_SECRET = 'api-key-secret-0123456789abcdef-0123456789';

export interface HttpResult<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

/** The environment that turns API keys (and the admin API) on. */
export const ACCESS_ENV = { ADMIN_TOKEN, API_KEY_SECRET: KEY_SECRET };

export async function call<T = Record<string, unknown>>(
  url: string,
  method: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<HttpResult<T>> {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // SSE or plain text stays text
  }
  return { status: res.status, headers: res.headers, body: parsed as T };
}

/** The admin API of a gateway, with ADMIN_TOKEN. */
export function adminApi(gw: TestGateway) {
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  return {
    call: <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => call<T>(`${gw.url}${path}`, method, body, auth),
    async createKey(body: Record<string, unknown>): Promise<{ id: string; key: string; prefix: string } & Record<string, unknown>> {
      const res = await call<{ id: string; key: string; prefix: string }>(`${gw.url}/admin/api-keys`, 'POST', body, auth);
      if (res.status !== 201) throw new Error(`creating a key answered ${res.status}: ${JSON.stringify(res.body)}`);
      return res.body;
    },
  };
}

/** POST /v1/chat/completions with a key (Bearer) or none. */
export function chat(gw: TestGateway, key: string | undefined, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return call<Record<string, unknown> & { error?: { message: string; type: string; code: string | null; param: string | null } }>(
    `${gw.url}/v1/chat/completions`,
    'POST',
    body,
    {
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
  );
}

export async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A REDIS_KEY_PREFIX nobody else uses (other test runs share the Redis server). */
export function redisPrefix(): string {
  return `hi-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}:`;
}

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';

/** Deletes what a test left under its prefix (spend counters live for days otherwise). */
export async function clearRedisPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
