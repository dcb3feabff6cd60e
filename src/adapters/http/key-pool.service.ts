import { Injectable } from '@nestjs/common';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';

/** How long a key sits out after the upstream refused it, unless a Retry-After says otherwise. */
export const KEY_MUTE_MS = { rateLimited: 30_000, refused: 300_000 } as const;

/** Statuses that say "this key, not this request": another key may well succeed. */
export function isKeyFailure(err: unknown): err is UpstreamError {
  return err instanceof UpstreamError && err.failure === 'http' && (err.upstreamStatus === 429 || err.upstreamStatus === 401 || err.upstreamStatus === 403);
}

/**
 * The API keys of routes with several (`api_keys: [...]`). Each call takes the next key in turn;
 * a key the upstream answers 429, 401 or 403 sits out for a while (the Retry-After, else 30 s for
 * 429 and 5 min for 401/403) and the call is made again with another key it has not tried — never
 * twice with the same key. While every key of a route sits out, a request still tries the one
 * whose pause ends first, so a route is never shut by the gateway alone. State is per process
 * and keyed by the upstream origin and the key, so routes sharing a key share its pause.
 */
@Injectable()
export class KeyPool {
  private readonly mutedUntil = new Map<string, number>();
  private readonly cursor = new WeakMap<readonly string[], number>();

  /** The clock (tests replace it). */
  now: () => number = Date.now;

  /**
   * Runs `call` with one of the route's keys (undefined for a keyless route) and moves on to
   * another key when the upstream refuses the key. `call` must throw `UpstreamError`s.
   */
  async run<T>(route: RouteDef, signal: AbortSignal, call: (key: string | undefined) => Promise<T>): Promise<T> {
    const keys = route.apiKeys;
    if (keys.length <= 1) return call(keys[0]);
    const tried = new Set<number>();
    let last: UpstreamError | undefined;
    for (;;) {
      const i = this.pick(route, tried);
      // Only after a refusal: the first pick always finds a key.
      if (i === undefined) throw last!;
      tried.add(i);
      try {
        return await call(keys[i]);
      } catch (err) {
        if (!isKeyFailure(err) || signal.aborted) throw err;
        this.mute(route, keys[i], err);
        last = err;
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
    if (this.mutedUntil.size > 10_000) this.sweep();
  }

  /**
   * The next key to use: the next one in turn that is not sitting out and not tried yet; if none,
   * and this request has tried none at all, the one whose pause ends first.
   */
  private pick(route: RouteDef, tried: ReadonlySet<number>): number | undefined {
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
    return tried.size === 0 ? soonest : undefined;
  }

  private id(route: RouteDef, key: string): string {
    return `${route.baseUrl ?? route.kind}\u0000${key}`;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, until] of this.mutedUntil) if (until <= now) this.mutedUntil.delete(k);
  }
}
