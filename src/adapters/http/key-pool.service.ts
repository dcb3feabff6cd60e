import { Injectable } from '@nestjs/common';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import type { CallContext } from '../llm-adapter';

/** How long a key sits out after the upstream refused it, unless a Retry-After says otherwise. */
export const KEY_MUTE_MS = { rateLimited: 30_000, refused: 300_000 } as const;
/** How long the keys that refused a request are remembered for it (across the executor's retries). */
const REQUEST_MEMORY_MS = 10 * 60_000;

/** Statuses that say "this key, not this request": another key may well succeed. */
export function isKeyFailure(err: unknown): err is UpstreamError {
  return (
    err instanceof UpstreamError &&
    err.failure === 'http' &&
    (err.upstreamStatus === 429 || err.upstreamStatus === 401 || err.upstreamStatus === 403)
  );
}

interface Refusals {
  /** Indexes of the route's keys that refused this request. */
  keys: Set<number>;
  last: UpstreamError;
  at: number;
}

/**
 * The API keys of routes with several (`api_keys: [...]`). Each call takes the next key in turn;
 * a key the upstream answers 429, 401 or 403 sits out for a while (the Retry-After, else 30 s for
 * 429 and 5 min for 401/403) and the call is made again with another key. A request is never
 * sent twice to a key that refused it, also when the route executor tries the route again
 * later: the refusals are remembered per request. When every key has refused the request, the
 * error says the route cannot serve it (`retryable: false`), so the executor moves on to another
 * route instead of repeating this one. While every key of a route sits out, a request still
 * tries the one whose pause ends first, so the gateway alone never shuts a route. State is per
 * process and keyed by the upstream origin and the key, so routes sharing a key share its pause.
 */
@Injectable()
export class KeyPool {
  private readonly mutedUntil = new Map<string, number>();
  private readonly cursor = new WeakMap<readonly string[], number>();
  private readonly refusals = new Map<string, Refusals>();
  /** The clock (tests replace it). */
  now: () => number = Date.now;

  /**
   * Runs `call` with one of the route's keys (undefined for a keyless route) and moves on to
   * another key when the upstream refuses the key. `call` must throw `UpstreamError`s.
   */
  async run<T>(route: RouteDef, ctx: Pick<CallContext, 'requestId' | 'signal'>, call: (key: string | undefined) => Promise<T>): Promise<T> {
    const keys = route.apiKeys;
    if (keys.length <= 1) return call(keys[0]);
    const memoryKey = `${ctx.requestId}\u0000${route.id}`;
    const earlier = this.refusals.get(memoryKey);
    const tried = new Set<number>(earlier?.keys);
    let last = earlier?.last;
    for (;;) {
      const i = this.pick(route, tried, last === undefined);
      if (i === undefined) throw exhausted(last!, route);
      tried.add(i);
      try {
        return await call(keys[i]);
      } catch (err) {
        if (!isKeyFailure(err) || ctx.signal.aborted) throw err;
        this.mute(route, keys[i], err);
        last = err;
        this.remember(memoryKey, i, err);
      }
    }
  }

  /** Whether a key currently sits out (for tests and the admin view). */
  isMuted(route: RouteDef, key: string): boolean {
    return (this.mutedUntil.get(this.id(route, key)) ?? 0) > this.now();
  }

  mute(route: RouteDef, key: string, err: UpstreamError): void {
    const ms = err.retryAfterMs ?? (err.upstreamStatus === 429 ? KEY_MUTE_MS.rateLimited : KEY_MUTE_MS.refused);
    this.mutedUntil.set(this.id(route, key), this.now() + Math.max(ms, 1000));
    if (this.mutedUntil.size > 10_000) {
      const now = this.now();
      for (const [k, until] of this.mutedUntil) if (until <= now) this.mutedUntil.delete(k);
    }
  }

  /**
   * The next key to use: the next one in turn that is not sitting out and not tried yet; if none,
   * and `orMuted` (nothing has refused this request yet), the one whose pause ends first.
   */
  private pick(route: RouteDef, tried: ReadonlySet<number>, orMuted: boolean): number | undefined {
    const keys = route.apiKeys;
    const now = this.now();
    const start = this.cursor.get(keys) ?? 0;
    let soonest: number | undefined;
    let soonestAt = Infinity;
    for (let k = 0; k < keys.length; k++) {
      const i = (start + k) % keys.length;
      if (tried.has(i)) continue;
      const until = this.mutedUntil.get(this.id(route, keys[i])) ?? 0;
      if (until <= now) {
        this.cursor.set(keys, i + 1);
        return i;
      }
      if (until < soonestAt) {
        soonestAt = until;
        soonest = i;
      }
    }
    return orMuted ? soonest : undefined;
  }

  private remember(memoryKey: string, index: number, err: UpstreamError): void {
    const now = this.now();
    const r = this.refusals.get(memoryKey);
    if (r) {
      r.keys.add(index);
      r.last = err;
      r.at = now;
      return;
    }
    if (this.refusals.size >= 1000) {
      for (const [k, v] of this.refusals) if (now - v.at > REQUEST_MEMORY_MS) this.refusals.delete(k);
    }
    this.refusals.set(memoryKey, { keys: new Set([index]), last: err, at: now });
  }

  private id(route: RouteDef, key: string): string {
    return `${route.baseUrl ?? route.kind}\u0000${key}`;
  }
}

/** The last refusal, marked as the route's (not worth repeating here: every key said no). */
function exhausted(last: UpstreamError, route: RouteDef): UpstreamError {
  return last.with({ retryable: false, route: last.route ?? route.id });
}
