import { startOfNextUtcMonth, utcDay, utcMonth } from '../common/principal';

/**
 * Per-key limits kept in this process: used without REDIS_URL, and while Redis is unreachable.
 * Same rules as the Redis scripts (limits.lua.ts): request and token windows of 60 one-second
 * buckets, requests in flight with a lease (so a request that never settles frees its slot
 * eventually), spend per UTC day and month in nano-dollars starting from the request log's figure.
 */

export type LimitName = 'rpm' | 'tpm' | 'concurrency' | 'daily_budget' | 'monthly_budget';

/** Limits as the stores take them: -1 = does not apply; money in nano-dollars. */
export interface StoreLimits {
  rpm: number;
  tpm: number;
  concurrency: number;
  dayBudget: number;
  monthBudget: number;
}

/** Whether requests hold something while in flight (a concurrency slot, a budget reservation) that a settlement frees. */
export function holdsInFlight(l: StoreLimits): boolean {
  return l.concurrency >= 0 || hasBudget(l);
}

/** Whether the key has a budget, so that requests reserve their cost while in flight. */
export function hasBudget(l: StoreLimits): boolean {
  return l.dayBudget >= 0 || l.monthBudget >= 0;
}

export interface StoreBaseline {
  day: string;
  dayNano: number;
  month: string;
  monthNano: number;
}

/** A key's spend in the shared store (nano-USD; -1 where it has no such budget), by UTC day and month. */
export interface SharedSpend {
  day: string;
  dayNano: number;
  month: string;
  monthNano: number;
}

export interface AdmitArgs {
  keyId: string;
  rid: string;
  limits: StoreLimits;
  tokens: number;
  costNano: number;
  leaseMs: number;
  baseline: StoreBaseline;
}

export interface AdmitOutcome {
  ok: boolean;
  limit?: LimitName;
  retryAfterMs: number;
  /** The store's clock (Redis TIME, or this process's). */
  now: number;
  /** The second the request was counted in. */
  bucket: number;
  rpmUsed: number;
  rpmResetMs: number;
  tpmUsed: number;
  tpmResetMs: number;
  /** For budget refusals: spent in the period, reserved in flight, this request's reservation (nano-USD). */
  spentNano: number;
  reservedNano: number;
  costNano: number;
}

export interface SettleArgs {
  keyId: string;
  rid: string;
  bucket: number;
  estimateTokens: number;
  actualTokens: number;
  costNano: number;
  baseline: StoreBaseline;
  trackTokens: boolean;
  trackSpend: boolean;
  /** The key's budgets: 'd' daily, 'm' monthly (whose lost spend counters a settlement starts again). */
  budgets?: string;
}

interface KeyState {
  rpm: Map<number, number>;
  tpm: Map<number, number>;
  inflight: Map<string, { expires: number; costNano: number }>;
  spent: Map<string, number>;
  /** The latest spend the shared store reported, by period (`d:<day>`, `m:<month>`): one of each. */
  shared: Map<string, number>;
  touched: number;
}

const WINDOW_S = 60;
/** Retry-After of a refusal that requests in flight cause (concurrency, their reserved cost). */
export const IN_FLIGHT_RETRY_MS = 1000;

export class LocalLimits {
  private readonly keys = new Map<string, KeyState>();

  constructor(private readonly clock: () => number = Date.now) {}

  admit(a: AdmitArgs): AdmitOutcome {
    const now = this.clock();
    const sec = Math.floor(now / 1000);
    const s = this.state(a.keyId, now);
    const out: AdmitOutcome = {
      ok: false,
      retryAfterMs: 0,
      now,
      bucket: sec,
      rpmUsed: 0,
      rpmResetMs: 0,
      tpmUsed: 0,
      tpmResetMs: 0,
      spentNano: 0,
      reservedNano: 0,
      costNano: 0,
    };
    const refuse = (limit: LimitName, retry: number, money?: [number, number, number]) => {
      out.limit = limit;
      out.retryAfterMs = Math.max(0, retry);
      if (money) [out.spentNano, out.reservedNano, out.costNano] = money;
      return out;
    };
    const { rpm, tpm, concurrency, dayBudget, monthBudget } = a.limits;

    // Both windows are read before either refuses, so that a refusal's headers show both.
    const rw = rpm >= 0 ? window(s.rpm, sec, now) : undefined;
    const tw = tpm >= 0 ? window(s.tpm, sec, now) : undefined;
    if (rw) [out.rpmUsed, out.rpmResetMs] = [rw.used, rw.resetMs];
    if (tw) [out.tpmUsed, out.tpmResetMs] = [tw.used, tw.resetMs];
    // A request larger than the whole tpm_limit never fits: said first, so that no wait is asked for.
    if (tw && a.tokens > tpm) return refuse('tpm', tw.waitFor(tpm, a.tokens));
    if (rw && rw.used + 1 > rpm) return refuse('rpm', rw.waitFor(rpm, 1));
    if (tw && tw.used + a.tokens > tpm) return refuse('tpm', tw.waitFor(tpm, a.tokens));
    const budgets = hasBudget(a.limits);
    const track = holdsInFlight(a.limits);
    if (track) {
      for (const [rid, f] of s.inflight) if (f.expires <= now) s.inflight.delete(rid);
      if (concurrency >= 0 && s.inflight.size >= concurrency) return refuse('concurrency', IN_FLIGHT_RETRY_MS);
    }
    if (budgets) {
      let reserved = 0;
      for (const f of s.inflight.values()) reserved += f.costNano;
      const day = String(utcDay(now));
      const month = String(utcMonth(now));
      // A budget the spend alone uses up frees at the end of its period; one that the requests in
      // flight fill frees as they end, so its refusal says to retry in a second. With both over,
      // the refusal names the one that frees later.
      let over: [LimitName, number, number] | undefined;
      if (dayBudget >= 0) {
        const spent = this.spent(s, `d:${day}`, day === a.baseline.day ? a.baseline.dayNano : 0);
        if (spent + reserved + a.costNano > dayBudget)
          over = ['daily_budget', spent + a.costNano > dayBudget ? (utcDay(now) + 1) * 86_400_000 - now : IN_FLIGHT_RETRY_MS, spent];
      }
      if (monthBudget >= 0) {
        const spent = this.spent(s, `m:${month}`, month === a.baseline.month ? a.baseline.monthNano : 0);
        if (spent + reserved + a.costNano > monthBudget) {
          const retry = spent + a.costNano > monthBudget ? startOfNextUtcMonth(now).getTime() - now : IN_FLIGHT_RETRY_MS;
          // On a month's last day both free at midnight: the monthly one is named, as the script does.
          if (!over || retry >= over[1]) over = ['monthly_budget', retry, spent];
        }
      }
      // A call that costs nothing (count_tokens, a free model) spends no budget, spent or not.
      if (over && a.costNano > 0) return refuse(over[0], over[1], [over[2], reserved, a.costNano]);
    }

    if (rpm >= 0) {
      s.rpm.set(sec, (s.rpm.get(sec) ?? 0) + 1);
      out.rpmUsed++;
    }
    if (tpm >= 0) {
      s.tpm.set(sec, (s.tpm.get(sec) ?? 0) + a.tokens);
      out.tpmUsed += a.tokens;
    }
    if (track) s.inflight.set(a.rid, { expires: now + a.leaseMs, costNano: budgets ? a.costNano : 0 });
    out.ok = true;
    return out;
  }

  settle(a: SettleArgs): void {
    const now = this.clock();
    const sec = Math.floor(now / 1000);
    const s = this.state(a.keyId, now);
    s.inflight.delete(a.rid);
    if (a.trackTokens) {
      const delta = a.actualTokens - a.estimateTokens;
      if (a.bucket > sec - WINDOW_S) {
        // Never below zero: a bucket that lost its count (the shared store's data gone) must not
        // go negative and grant the unused estimate on top of the limit.
        const had = s.tpm.get(a.bucket) ?? 0;
        if (delta > 0 || had > 0) s.tpm.set(a.bucket, Math.max(0, had + delta));
      } else if (delta > 0) {
        s.tpm.set(sec, (s.tpm.get(sec) ?? 0) + delta);
      }
    }
    if (a.trackSpend && a.costNano > 0) {
      // A request counts in the period it started in, as its api_logs row (created_at) does: one
      // admitted before midnight and over after it is yesterday's, not today's.
      const admitted = a.bucket * 1000;
      const day = String(utcDay(now));
      const month = String(utcMonth(now));
      if (String(utcDay(admitted)) === day) {
        const dk = `d:${day}`;
        s.spent.set(dk, this.spent(s, dk, day === a.baseline.day ? a.baseline.dayNano : 0) + a.costNano);
      }
      if (String(utcMonth(admitted)) === month) {
        const mk = `m:${month}`;
        s.spent.set(mk, this.spent(s, mk, month === a.baseline.month ? a.baseline.monthNano : 0) + a.costNano);
      }
    }
  }

  /**
   * What the shared store (Redis) last counted for a key: should it go away, this process goes on
   * from there rather than from the baseline the key was loaded with, which misses what was spent
   * since (through any replica). Negative amounts: no such budget.
   */
  observe(keyId: string, spend: SharedSpend): void {
    const s = this.state(keyId, this.clock());
    if (spend.dayNano >= 0) {
      this.spent(s, `d:${spend.day}`, spend.dayNano);
      latest(s.shared, `d:${spend.day}`, spend.dayNano);
    }
    if (spend.monthNano >= 0) {
      this.spent(s, `m:${spend.month}`, spend.monthNano);
      latest(s.shared, `m:${spend.month}`, spend.monthNano);
    }
  }

  /**
   * The baseline for the shared store: the request log's figure, raised to the spend the store
   * itself last reported for the period. Should the store lose its counters (a restart without
   * persistence, FLUSHALL, an eviction, a failover to a replica behind), they start again from
   * what it had counted, not from the request log as it was when the key was loaded.
   */
  sharedBaseline(keyId: string, base: StoreBaseline, pending?: ReadonlyMap<string, number>): StoreBaseline {
    const s = this.keys.get(keyId);
    if (!s || (s.shared.size === 0 && s.spent.size === 0)) return base;
    const out = { ...base };
    // And this process's own count: what the store last reported or the request log said, plus
    // what it settled here since, which the store may never have seen (requests it admitted while
    // the store was away or silent). Each figure is a lower bound of the key's spend, so the
    // highest counts nothing twice, where adding that spend to the counter would once the
    // request log's baseline, which holds it too, had raised the counter. Spend waiting to be
    // settled in the store (`pending`) is left out: that settlement adds it.
    for (const [period, v] of [...s.shared, ...s.spent]) {
      const [kind, p] = [period[0], period.slice(2)];
      if (kind === 'd') {
        if (p === out.day) out.dayNano = Math.max(out.dayNano, v);
        else if (out.day === '' || Number(p) > Number(out.day)) [out.day, out.dayNano] = [p, v];
      } else if (p === out.month) out.monthNano = Math.max(out.monthNano, v);
      else if (out.month === '' || Number(p) > Number(out.month)) [out.month, out.monthNano] = [p, v];
    }
    if (pending) {
      out.dayNano = Math.max(0, out.dayNano - (pending.get(`d:${out.day}`) ?? 0));
      out.monthNano = Math.max(0, out.monthNano - (pending.get(`m:${out.month}`) ?? 0));
    }
    return out;
  }

  /**
   * Counts a request the shared store admitted as in flight here too (Redis went away while it
   * ran): its slot and reservation hold the key's per-process limits until it settles.
   */
  hold(keyId: string, rid: string, expires: number, costNano: number): void {
    const now = this.clock();
    if (expires > now) this.state(keyId, now).inflight.set(rid, { expires, costNano });
  }

  /** Forgets a request `hold` counted, now that it settled in the shared store. */
  release(keyId: string, rid: string): void {
    this.keys.get(keyId)?.inflight.delete(rid);
  }

  /** Drops the state of keys idle for `idleMs` with nothing in flight (spend restarts from the request log). */
  sweep(idleMs: number): void {
    const now = this.clock();
    for (const [id, s] of this.keys) {
      for (const [rid, f] of s.inflight) if (f.expires <= now) s.inflight.delete(rid);
      if (s.inflight.size === 0 && now - s.touched > idleMs) this.keys.delete(id);
    }
  }

  get size(): number {
    return this.keys.size;
  }

  private state(keyId: string, now: number): KeyState {
    let s = this.keys.get(keyId);
    if (!s)
      this.keys.set(
        keyId,
        (s = { rpm: new Map(), tpm: new Map(), inflight: new Map(), spent: new Map(), shared: new Map(), touched: now }),
      );
    s.touched = now;
    return s;
  }

  /**
   * What the key spent in `period`: the counter, but at least the baseline read from the request
   * log (spend the counter missed: made while the key had no budget, or counted in Redis).
   */
  private spent(s: KeyState, period: string, base: number): number {
    let v = s.spent.get(period);
    if (v === undefined) {
      // Periods other than this one are done with.
      for (const k of s.spent.keys()) if (k[0] === period[0]) s.spent.delete(k);
      s.spent.set(period, (v = base));
    } else if (base > v) s.spent.set(period, (v = base));
    return v;
  }
}

/** Keeps `period`'s highest value in `m`, and only the latest period of its kind. */
function latest(m: Map<string, number>, period: string, v: number): void {
  for (const [k, old] of m) {
    if (k[0] !== period[0]) continue;
    if (k === period) return void m.set(k, Math.max(old, v));
    if (Number(k.slice(2)) > Number(period.slice(2))) return; // a report older than one already seen
    m.delete(k);
  }
  m.set(period, v);
}

function window(buckets: Map<number, number>, sec: number, now: number) {
  let used = 0;
  const live: Array<[number, number]> = [];
  for (const [b, n] of buckets) {
    if (b <= sec - WINDOW_S) buckets.delete(b);
    else {
      used += n;
      live.push([b, n]);
    }
  }
  live.sort((x, y) => x[0] - y[0]);
  return {
    used,
    resetMs: ((live.length > 0 ? live[0][0] : sec) + WINDOW_S) * 1000 - now,
    /** ms until `need` more fit under `limit`. */
    waitFor(limit: number, need: number): number {
      let freed = 0;
      for (const [b, n] of live) {
        freed += n;
        if (used - freed + need <= limit) return (b + WINDOW_S) * 1000 - now;
      }
      return WINDOW_S * 1000;
    },
  };
}
