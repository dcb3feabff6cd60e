import { Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Response } from 'express';
import type Redis from 'ioredis';
import { within } from '../common/deadline';
import { picoToUsd, usdToPico } from '../common/money';
import { hasLimits, startOfNextUtcMonth, utcDay, utcMonth, type KeyLimits, type Principal, type SpendBaseline } from '../common/principal';
import type { RequestContext } from '../common/request-context';
import { AppConfig } from '../config/app-config';
import { ModelRegistry } from '../config/model-registry.service';
import { isCommandTimeout, RedisService } from '../redis/redis.service';
import { ApiKeysService } from '../storage/api-keys.service';
import type { Charge } from './charge-estimate';
import { ADMIT_LUA, RENEW_LUA, SETTLE_LUA } from './limits.lua';
import {
  hasBudget,
  holdsInFlight,
  IN_FLIGHT_RETRY_MS,
  LocalLimits,
  type AdmitArgs,
  type AdmitOutcome,
  type SettleArgs,
  type StoreBaseline,
  type StoreLimits,
} from './local-limits';
import { RateLimitError } from './rate-limit.error';

type Store = 'redis' | 'local';

/** The longest an admission waits for a key's spend from the request log (see `freshBaseline`). */
const BASELINE_READ_MS = 1000;

interface LimitCommands {
  hiLimitAdmit(...args: Array<string | number>): Promise<unknown[]>;
  hiLimitSettle(...args: Array<string | number>): Promise<unknown[]>;
  hiLimitRenew(...args: Array<string | number>): Promise<unknown>;
}

/** A settlement Redis has not taken; `timedOut`: its script may have run there all the same. */
interface Unsettled {
  args: SettleArgs;
  timedOut: boolean;
}

/** What a request used, known once it is over (an api_logs row has both). */
export interface Usage {
  total_tokens: number;
  cost_usd: string;
}

/**
 * A request admitted under its key's limits. `settle` (exactly once, when the request is over,
 * whatever happened) frees its concurrency slot and replaces the reserved estimate by what it
 * really used and cost.
 */
/** Settlements kept for Redis while it is away; past it, the oldest is left to its lease. */
const UNSETTLED_LIMIT = 10_000;

export class UsageLease {
  private settled = false;

  constructor(
    private readonly limiter: UsageLimiter,
    private readonly store: Store,
    private readonly args: AdmitArgs,
    private readonly bucket: number,
  ) {}

  settle(usage: Usage): void {
    if (this.settled) return;
    this.settled = true;
    const a = this.args;
    this.limiter.settle(this.store, {
      keyId: a.keyId,
      rid: a.rid,
      bucket: this.bucket,
      estimateTokens: a.tokens,
      actualTokens: Math.max(0, Math.trunc(Number(usage.total_tokens) || 0)),
      costNano: nano(safePico(usage.cost_usd)),
      baseline: a.baseline,
      trackTokens: a.limits.tpm >= 0,
      trackSpend: hasBudget(a.limits),
      budgets: `${a.limits.dayBudget >= 0 ? 'd' : ''}${a.limits.monthBudget >= 0 ? 'm' : ''}`,
    });
  }
}

/**
 * Per-key limits, checked before the upstream call: requests and tokens per minute, requests in
 * flight, daily and monthly USD budgets. With REDIS_URL every process and replica shares the
 * counters (one Lua script per check, on Redis' clock); without it, or while Redis is
 * unreachable, each process keeps its own (and says so in the log; /health shows Redis degraded).
 *
 * Any endpoint that calls an upstream for a key uses it the same way: after ApiKeyGuard,
 * `const lease = await limiter.admit(ctx, res, () => charge)` before the call (throws RateLimitError,
 * a 429), and `lease?.settle(row)` with the request's api_logs row when it is over. The charge is
 * a function so that anonymous calls and keys without limits never pay for the estimate.
 */
@Injectable()
export class UsageLimiter implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('Limits');
  private readonly local = new LocalLimits();
  private sweepTimer?: ReturnType<typeof setInterval>;
  private lastStore?: Store;
  /** Settlements of requests Redis admitted that it could not take when they ended, oldest first. */
  private readonly unsettled: Unsettled[] = [];
  /**
   * Requests Redis admitted that hold a slot or a reservation and have not settled, by request id:
   * the per-process limits count them while Redis is away, and Redis is told of them again when it
   * is back (it may have come back empty).
   */
  private readonly sharedInFlight = new Map<string, { args: AdmitArgs; expires: number }>();
  private settling?: Promise<void>;
  private renewTimer?: ReturnType<typeof setInterval>;
  /** How long Redis holds a request's slot and reservation without this process renewing it. */
  private readonly redisLeaseMs: number;

  /** Reads of a key's spend from the request log in flight, one per key (see `freshBaseline`). */
  private readonly baselineReads = new Map<string, Promise<StoreBaseline | undefined>>();

  constructor(
    private readonly redis: RedisService,
    private readonly config: AppConfig,
    private readonly registry: ModelRegistry,
    private readonly apiKeys: ApiKeysService,
  ) {
    this.redisLeaseMs = config.env.REDIS_LEASE_MS;
  }

  onModuleInit(): void {
    this.sweepTimer = setInterval(() => {
      this.local.sweep(600_000);
      const now = Date.now();
      for (const [rid, f] of this.sharedInFlight) if (f.expires <= now) this.sharedInFlight.delete(rid);
    }, 60_000);
    this.sweepTimer.unref();
    // Redis' leases are short, so that a process that dies frees its requests' slots soon.
    this.renewTimer = setInterval(() => this.renew(), Math.ceil(this.redisLeaseMs / 3));
    this.renewTimer.unref();
    this.redis.onReady(() => {
      this.renew();
      this.settleLater();
    });
  }

  onModuleDestroy(): void {
    clearInterval(this.sweepTimer);
    clearInterval(this.renewTimer);
  }

  /**
   * Admits the current request (its key from ApiKeyGuard) or throws a 429 naming the limit.
   * Sets the x-ratelimit-* headers. Undefined for anonymous calls and keys without limits.
   */
  async admit(ctx: RequestContext | undefined, res: Response, estimate: () => Charge): Promise<UsageLease | undefined> {
    if (!ctx || ctx.principal === undefined) throw new Error('UsageLimiter.admit() called on a route without ApiKeyGuard');
    const p = ctx.principal;
    if (!p || !hasLimits(p.limits)) return undefined;
    const charge = estimate();
    const args: AdmitArgs = {
      keyId: p.id,
      rid: ctx.requestId,
      limits: storeLimits(p.limits),
      tokens: Math.max(0, Math.ceil(charge.tokens)),
      costNano: nano(charge.costPico),
      leaseMs: (this.registry.current().routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs) + 60_000,
      baseline: this.local.sharedBaseline(p.id, storeBaseline(p.baseline), this.pendingSpend(p.id)),
    };
    const { store, outcome } = await this.runAdmit(args);
    const headers = rateHeaders(p.limits, outcome);
    if (!outcome.ok) throw refusal(p, args, outcome, headers, charge.inputOnly === true);
    if (store === 'redis' && holdsInFlight(args.limits)) {
      const expires = outcome.now + args.leaseMs;
      this.sharedInFlight.set(args.rid, { args, expires });
      // Redis went away while this admission was answered: the per-process limits count it too.
      if (this.lastStore === 'local') this.local.hold(args.keyId, args.rid, expires, args.costNano);
    }
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    return new UsageLease(this, store, args, outcome.bucket);
  }

  private async runAdmit(args: AdmitArgs): Promise<{ store: Store; outcome: AdmitOutcome }> {
    const client = this.redis.client;
    if (client) {
      try {
        let r = await commands(client).hiLimitAdmit(...this.keys(args.keyId), ...admitArgv(args, this.redisLeaseMs, '0'));
        if (Number(r[0]) === 2) {
          // A spend counter is missing: it starts from the request log's figure, read now.
          const fresh = await this.freshBaseline(args.keyId, true);
          if (fresh) args.baseline = fresh;
          r = await commands(client).hiLimitAdmit(...this.keys(args.keyId), ...admitArgv(args, this.redisLeaseMs, fresh ? '1' : '2'));
        }
        this.using('redis');
        const outcome = parseAdmit(r);
        if (outcome.ok) this.observe(args.keyId, r, 12);
        return { store: 'redis', outcome };
      } catch (err) {
        this.redis.noteFailure(err);
        this.logger.warn(`Redis limit check failed (${(err as Error).message}); this request is checked against per-process limits`);
        // A check that timed out may still be made once Redis answers: its slot and reservation
        // there are released when Redis is back, else they held the key for the whole lease.
        if (isCommandTimeout(err) && holdsInFlight(args.limits)) this.keepUnsettled({ args: releaseOf(args), timedOut: false });
      }
    }
    this.using('local');
    return { store: 'local', outcome: this.local.admit(args) };
  }

  /**
   * What the key has spent today and this month, read from the request log now (this process's
   * queued rows included; other replicas' rows not yet written are not), for a spend counter Redis
   * does not have: the baseline the key was cached with, or that Redis last told this process, may
   * be far behind what other replicas spent since (a key cached ten minutes ago, and Redis
   * restarted without persistence). `shared`: one read per key at a time (admissions); a
   * settlement reads on its own, after its row was queued. Undefined when the database does not
   * answer within BASELINE_READ_MS: then no counter is started from the figure the process has
   * (the request waits no longer, and the next admission reads again).
   */
  private freshBaseline(keyId: string, shared: boolean): Promise<StoreBaseline | undefined> {
    let read = shared ? this.baselineReads.get(keyId) : undefined;
    if (!read) {
      read = within(this.apiKeys.baseline(keyId), BASELINE_READ_MS).then(
        (b) => this.local.sharedBaseline(keyId, storeBaseline(b), this.pendingSpend(keyId)),
        (err: Error) => {
          this.logger.warn(
            `cannot read key ${keyId}'s spend from the request log (${err.message}); its spend counter is not started again yet`,
          );
          return undefined;
        },
      );
      if (shared) {
        const mine = read;
        this.baselineReads.set(keyId, mine);
        void mine.finally(() => {
          if (this.baselineReads.get(keyId) === mine) this.baselineReads.delete(keyId);
        });
      }
    }
    return read;
  }

  /** Called by UsageLease; never throws. */
  settle(store: Store, a: SettleArgs): void {
    if (store === 'local') {
      // Admitted per process while Redis was away or silent: what it spent, Redis never saw; the
      // baseline given to Redis carries it from now on (LocalLimits.sharedBaseline).
      this.local.settle(a);
      return;
    }
    if (this.sharedInFlight.delete(a.rid)) this.local.release(a.keyId, a.rid);
    const client = this.redis.client;
    // Redis admitted it but cannot count it now: this process's budgets do meanwhile (its tokens
    // were counted in Redis' window at admission), so that a request in flight when Redis went
    // away is not spent unseen; and the settlement is made in Redis when it is back, which
    // releases the request's concurrency slot and reservation there. Left to its lease, the slot
    // held the key at its concurrency limit for the whole-request timeout + 60 s.
    const unshared = (why: string, late: boolean) => {
      this.logger.warn(
        `Redis ${why}: the usage of request ${a.rid} is counted in this process's budgets until Redis is back, and settled there then`,
      );
      this.local.settle({ ...a, trackTokens: false });
      this.keepUnsettled({ args: a, timedOut: late });
    };
    if (!client) return unshared('unavailable', false);
    this.settleShared(client, a, false).catch((err: Error) => {
      this.redis.noteFailure(err);
      unshared(`settlement failed (${err.message})`, isCommandTimeout(err));
    });
  }

  /**
   * Spend of the key's settlements waiting for Redis, by period (`d:<day>`, `m:<month>`): Redis is
   * told of it by those settlements, so a baseline must not carry it as well.
   */
  private pendingSpend(keyId: string): ReadonlyMap<string, number> | undefined {
    let out: Map<string, number> | undefined;
    for (const { args: a } of this.unsettled) {
      if (a.keyId !== keyId || !a.trackSpend || a.costNano <= 0) continue;
      out ??= new Map();
      for (const period of [`d:${utcDay(a.bucket * 1000)}`, `m:${utcMonth(a.bucket * 1000)}`])
        out.set(period, (out.get(period) ?? 0) + a.costNano);
    }
    return out;
  }

  private keepUnsettled(u: Unsettled): void {
    if (this.unsettled.length >= UNSETTLED_LIMIT) this.unsettled.shift(); // the oldest lease lapses on its own
    this.unsettled.push(u);
  }

  /**
   * `onlyInFlight`: a replay of a settlement that timed out, which Redis may have made when it
   * answered again; made only while the request is still in flight there, so never twice.
   */
  private async settleShared(client: Redis, a: SettleArgs, onlyInFlight: boolean): Promise<void> {
    // The spend Redis last reported, should it have lost the counter meanwhile.
    let b = this.local.sharedBaseline(a.keyId, a.baseline, this.pendingSpend(a.keyId));
    const settle = (mode: '0' | '1' | '2') =>
      commands(client).hiLimitSettle(
        ...this.keys(a.keyId),
        a.rid,
        a.bucket,
        a.estimateTokens,
        a.actualTokens,
        a.costNano,
        b.day,
        b.dayNano,
        b.month,
        b.monthNano,
        a.trackTokens ? 1 : 0,
        a.trackSpend ? 1 : 0,
        onlyInFlight ? 1 : 0,
        mode,
        a.budgets ?? '',
      );
    let r = await settle('0');
    if (Number(r[0]) === -2) {
      // A spend counter Redis lost: started again from the request log, then this request's cost
      // added. The log may hold this request's row already (queued as the settlement began): then
      // it counts twice, a budget met by one request's cost sooner, never passed.
      const fresh = await this.freshBaseline(a.keyId, false);
      if (fresh) b = fresh;
      r = await settle(fresh ? '1' : '2');
    }
    this.observe(a.keyId, r, 1);
  }

  /**
   * Renews Redis' leases of the requests it admitted that this process still serves (until each
   * one's whole lease, the longest a request may run, is over). Also when Redis is (back) up: the
   * requests it lost (a restart without persistence) or let lapse while it was away are put
   * back; where it kept them nothing changes but the lease. Pipelined, so that it goes before any
   * settlement that could follow on this connection.
   */
  private renew(): void {
    const client = this.redis.client;
    if (!client || this.sharedInFlight.size === 0) return;
    const byKey = new Map<string, Array<string | number>>();
    const now = Date.now();
    for (const [rid, { args, expires }] of this.sharedInFlight) {
      if (expires <= now) {
        this.sharedInFlight.delete(rid);
        continue;
      }
      let held = byKey.get(args.keyId);
      if (!held) byKey.set(args.keyId, (held = []));
      held.push(rid, hasBudget(args.limits) ? args.costNano : -1);
    }
    if (byKey.size === 0) return;
    commands(client);
    const batch = client.pipeline() as unknown as LimitCommands & { exec(): Promise<unknown> };
    for (const [keyId, held] of byKey) {
      const [, , inflight, reserved] = this.keys(keyId);
      void batch.hiLimitRenew(inflight, reserved, this.redisLeaseMs, ...held);
    }
    batch.exec().catch((err: Error) => this.redis.noteFailure(err));
  }

  /** Redis is back: the settlements it missed are made there, in order. */
  private settleLater(): void {
    if (this.unsettled.length === 0 || this.settling) return;
    this.settling = (async () => {
      let done = 0;
      while (this.unsettled.length > 0) {
        const client = this.redis.client;
        if (!client) break; // gone again: the next 'ready' goes on
        const u = this.unsettled[0];
        try {
          // A settlement with spend is made only while its request is still in flight in Redis:
          // one that timed out may have been made already; one whose request Redis no longer
          // holds (its lease lapsed, Redis lost it) is in the request log's baseline by now.
          await this.settleShared(client, u.args, u.args.trackSpend);
        } catch (err) {
          this.redis.noteFailure(err);
          break;
        }
        this.unsettled.shift();
        done++;
      }
      if (done > 0) this.logger.log(`Redis is back: ${done} settlements it missed were made there`);
    })().finally(() => (this.settling = undefined));
  }

  /** Notes a script's report of the key's shared spend: month, day, day's and month's spend from `at`. */
  private observe(keyId: string, r: unknown[], at: number): void {
    const n = (i: number) => Number(r[at + i] ?? -1);
    if (r.length < at + 4 || (n(2) < 0 && n(3) < 0)) return;
    this.local.observe(keyId, { month: String(n(0)), day: String(n(1)), dayNano: n(2), monthNano: n(3) });
  }

  private keys(keyId: string): string[] {
    const tag = `{${keyId}}`;
    return ['rpm', 'tpm', 'inflight', 'resv', 'spent:'].map((k) => this.redis.key('lim', tag, k));
  }

  private using(store: Store): void {
    if (this.redis.status === 'disabled' || store === this.lastStore) {
      this.lastStore = store;
      return;
    }
    if (store === 'local')
      this.logger.warn(
        `Redis unavailable (${this.redis.error ?? this.redis.status}): rate limits and budgets are per process until it is back`,
      );
    else if (this.lastStore === 'local') this.logger.log('Redis is back: rate limits and budgets are shared again');
    // Away now: the requests Redis admitted that are still running count here meanwhile.
    if (store === 'local') for (const [rid, f] of this.sharedInFlight) this.local.hold(f.args.keyId, rid, f.expires, f.args.costNano);
    this.lastStore = store;
  }
}

function commands(client: Redis): LimitCommands {
  const c = client as unknown as Partial<LimitCommands> & Redis;
  if (typeof c.hiLimitAdmit !== 'function') {
    client.defineCommand('hiLimitAdmit', { numberOfKeys: 5, lua: ADMIT_LUA });
    client.defineCommand('hiLimitSettle', { numberOfKeys: 5, lua: SETTLE_LUA });
    client.defineCommand('hiLimitRenew', { numberOfKeys: 2, lua: RENEW_LUA });
  }
  return c as unknown as LimitCommands;
}

/** `leaseMs`: Redis' lease of the request's slot (renewed while it runs), at most its whole lease. */
/**
 * `mode`: '0' the baseline the request came with; '1' read from the request log just now (see
 * ADMIT_LUA's result 2); '2' that read failed.
 */
function admitArgv(a: AdmitArgs, leaseMs: number, mode: '0' | '1' | '2'): Array<string | number> {
  const l = a.limits;
  const b = a.baseline;
  return [
    a.rid,
    l.rpm,
    l.tpm,
    l.concurrency,
    l.dayBudget,
    l.monthBudget,
    a.tokens,
    a.costNano,
    Math.min(a.leaseMs, leaseMs),
    b.day,
    b.dayNano,
    b.month,
    b.monthNano,
    mode,
  ];
}

function parseAdmit(r: unknown[]): AdmitOutcome {
  const n = (i: number) => Number(r[i] ?? 0);
  const ok = n(0) === 1;
  const now = n(3);
  const limit = ok ? undefined : (String(r[1]) as AdmitOutcome['limit']);
  return {
    ok,
    limit,
    // The script leaves the time to the next month (0) to be worked out here.
    retryAfterMs: limit === 'monthly_budget' && n(2) === 0 ? startOfNextUtcMonth(now).getTime() - now : n(2),
    now,
    bucket: n(4),
    rpmUsed: n(5),
    rpmResetMs: n(6),
    tpmUsed: n(7),
    tpmResetMs: n(8),
    spentNano: n(9),
    reservedNano: n(10),
    costNano: n(11),
  };
}

/** Pico-dollars to whole nano-dollars, rounded up (the stores count in nano-dollars). */
export function nano(pico: bigint): number {
  return Number((pico + 999n) / 1000n);
}

function safePico(usd: string): bigint {
  try {
    return usdToPico(usd);
  } catch {
    return 0n;
  }
}

function usd(nanoDollars: number): string {
  // An estimate can overflow a double (an absurd max_tokens times a price); say "very much".
  const n = Number.isFinite(nanoDollars) ? Math.round(nanoDollars) : Number.MAX_SAFE_INTEGER;
  return picoToUsd(BigInt(Math.min(n, Number.MAX_SAFE_INTEGER)) * 1000n);
}

function storeLimits(l: KeyLimits): StoreLimits {
  return {
    rpm: l.rpm ?? -1,
    tpm: l.tpm ?? -1,
    concurrency: l.concurrency ?? -1,
    dayBudget: l.dailyBudgetPico === null ? -1 : Number(l.dailyBudgetPico / 1000n),
    monthBudget: l.monthlyBudgetPico === null ? -1 : Number(l.monthlyBudgetPico / 1000n),
  };
}

function storeBaseline(b: SpendBaseline | undefined): StoreBaseline {
  if (!b) return { day: '', dayNano: 0, month: '', monthNano: 0 };
  return { day: String(b.day), dayNano: nano(b.dayPico), month: String(b.month), monthNano: nano(b.monthPico) };
}

function rateHeaders(l: KeyLimits, o: AdmitOutcome): Record<string, string> {
  const h: Record<string, string> = {};
  const secs = (ms: number) => `${Math.max(0, Math.ceil(ms / 1000))}s`;
  if (l.rpm !== null) {
    h['x-ratelimit-limit-requests'] = String(l.rpm);
    h['x-ratelimit-remaining-requests'] = String(Math.max(0, l.rpm - o.rpmUsed));
    h['x-ratelimit-reset-requests'] = secs(o.rpmResetMs);
  }
  if (l.tpm !== null) {
    h['x-ratelimit-limit-tokens'] = String(l.tpm);
    h['x-ratelimit-remaining-tokens'] = String(Math.max(0, l.tpm - o.tpmUsed));
    h['x-ratelimit-reset-tokens'] = secs(o.tpmResetMs);
  }
  return h;
}

function refusal(p: Principal, a: AdmitArgs, o: AdmitOutcome, headers: Record<string, string>, inputOnly: boolean): RateLimitError {
  // What the estimate is made of, and what lowers it: embeddings generate nothing.
  const made = inputOnly ? 'its input' : 'prompt plus max_tokens';
  const lower = inputOnly ? 'send fewer or shorter inputs' : 'lower max_tokens or shorten the prompt';
  const wait = `retry in ${Math.max(1, Math.ceil(o.retryAfterMs / 1000))} s`;
  const who = `API key ${p.prefix}…`;
  const l = p.limits;
  let message: string;
  let permanent = false;
  switch (o.limit) {
    case 'rpm':
      message = `Rate limit reached: ${who} may make ${l.rpm} requests per minute (rpm_limit); ${wait}`;
      break;
    case 'tpm':
      permanent = a.tokens > (l.tpm ?? 0);
      message =
        a.tokens > (l.tpm ?? 0)
          ? `This request needs about ${a.tokens} tokens (${made}), more than the ${l.tpm} tokens per minute ${who} may use (tpm_limit); ${lower}`
          : `Rate limit reached: ${who} may use ${l.tpm} tokens per minute (tpm_limit) and this request needs about ${a.tokens}; ${wait}`;
      break;
    case 'concurrency':
      message = `Too many requests at once: ${who} may have ${l.concurrency} in flight (max_concurrency); ${wait}`;
      break;
    case 'daily_budget':
    case 'monthly_budget': {
      const daily = o.limit === 'daily_budget';
      const budgetPico = (daily ? l.dailyBudgetPico : l.monthlyBudgetPico) ?? 0n;
      const budget = picoToUsd(budgetPico);
      // A request that may cost more than the whole budget would be refused after any wait.
      const tooDear = !Number.isFinite(o.costNano) || o.costNano * 1000 > Number(budgetPico);
      if (tooDear) permanent = true;
      message =
        `${daily ? 'Daily' : 'Monthly'} budget reached: ${who} may spend $${budget} per UTC ${daily ? 'day' : 'month'} (${daily ? 'daily_budget_usd' : 'monthly_budget_usd'}); ` +
        `$${usd(o.spentNano)} is spent, $${usd(o.reservedNano)} reserved by requests in flight, and this request may cost up to $${usd(o.costNano)} ` +
        (inputOnly
          ? "(its input at the model's price). "
          : "(prompt plus max_tokens at the model's price; a lower max_tokens reserves less). ") +
        (tooDear
          ? `That is more than the whole budget: no wait makes it fit; ${lower}`
          : o.retryAfterMs <= IN_FLIGHT_RETRY_MS
            ? 'The reservations free as the requests in flight end'
            : `The budget renews at 00:00 UTC${daily ? '' : ' on the 1st'}`);
      break;
    }
    default:
      message = `Rate limit reached for ${who}; ${wait}`;
  }
  return new RateLimitError(o.limit ?? 'rpm', message, o.retryAfterMs, headers, permanent);
}

/** A settlement that only frees a request's slot and reservation (no tokens, no spend). */
function releaseOf(a: AdmitArgs): SettleArgs {
  return {
    keyId: a.keyId,
    rid: a.rid,
    bucket: 0,
    estimateTokens: 0,
    actualTokens: 0,
    costNano: 0,
    baseline: a.baseline,
    trackTokens: false,
    trackSpend: false,
  };
}
