import { createHash, randomUUID } from 'node:crypto';
import { Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { ModelRegistry } from '../config/model-registry.service';
import { RedisService } from '../redis/redis.service';
import type { CircuitTransition } from './circuit-breaker';
import { RouteStateService, type RouteState } from './route-state.service';

const SYNC_INTERVAL = 'routing-state-sync';

/** Writes a field with Redis' own clock, so that processes on machines with skewed clocks agree on "until". */
const OPEN_CIRCUIT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({ open_until = now + tonumber(ARGV[2]), failures = tonumber(ARGV[3]) }))
return now`;
const WRITE_HEALTH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({ ok = ARGV[2] == '1', detail = ARGV[3], latency_ms = tonumber(ARGV[4]), at = now }))
return now`;

interface SharedCircuit {
  open_until: number;
  failures: number;
}

/** A route's endpoint as the shared circuit names it: a digest (its key may hold a URL's query). */
function endpointTag(st: RouteState): string {
  return createHash('sha256').update(st.endpoint.key).digest('hex').slice(0, 16);
}

/**
 * A route's circuit in Redis: by model, route and endpoint, so that processes whose route points
 * at different servers (one reloaded before the others) neither open nor close each other's.
 */
function circuitField(st: RouteState): string {
  return `${st.key}#${endpointTag(st)}`;
}

/** `<model>|<route>#<endpoint digest>`; a field without the digest (written before it) is the route's. */
const TAGGED_FIELD = /^(.*)#([0-9a-f]{16})$/s;
interface SharedHealth {
  ok: boolean;
  detail?: string;
  latency_ms?: number;
  at: number;
}

export interface HealthResult {
  ok: boolean;
  detail?: string;
  latencyMs?: number;
}

/**
 * With REDIS_URL, every process and replica sees the same circuits and endpoint health. Requests
 * never wait for Redis: breakers and health live in memory (RouteStateService); a breaker that
 * opens or closes is written to Redis as it happens (in the background), and every
 * `state_sync_ms` each process reads the shared state back in one round trip and adopts what
 * others found. Health probes are shared out: per interval one process probes each endpoint (a
 * Redis lock) and the others read its result. Without Redis, or while it is unreachable, every
 * process keeps its own state and probes for itself.
 */
@Injectable()
export class SharedStateService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('RoutingState');
  private readonly id = randomUUID();
  private syncMs = 0;
  private syncing = false;

  constructor(
    private readonly redis: RedisService,
    private readonly state: RouteStateService,
    private readonly registry: ModelRegistry,
    private readonly scheduler: SchedulerRegistry,
  ) {
    state.onTransition((st, t) => this.publishCircuit(st, t));
  }

  /** Whether state is shared at all (REDIS_URL set), whether or not Redis is reachable right now. */
  get enabled(): boolean {
    return this.redis.status !== 'disabled';
  }

  onApplicationBootstrap(): void {
    this.configure();
  }

  /** (Re)starts the background sync at routing.yaml's `state_sync_ms`. */
  configure(): void {
    if (!this.enabled) return;
    const ms = this.registry.current().routing.stateSyncMs;
    if (ms === this.syncMs) return;
    if (this.scheduler.doesExist('interval', SYNC_INTERVAL)) this.scheduler.deleteInterval(SYNC_INTERVAL);
    this.syncMs = ms;
    const timer = setInterval(() => void this.sync(), ms);
    timer.unref();
    this.scheduler.addInterval(SYNC_INTERVAL, timer);
    void this.sync();
  }

  onApplicationShutdown(): void {
    if (this.scheduler.doesExist('interval', SYNC_INTERVAL)) this.scheduler.deleteInterval(SYNC_INTERVAL);
    this.syncMs = 0;
  }

  /**
   * Of these endpoints, the ones this process should probe now: all of them without Redis; with
   * it, those whose probe lock for this interval it won.
   */
  async claimProbes(keys: readonly string[], intervalMs: number): Promise<string[]> {
    const client = this.redis.client;
    if (!client || keys.length === 0) return [...keys];
    try {
      const ttl = Math.max(100, Math.floor(intervalMs * 0.8));
      const pipe = client.pipeline();
      for (const key of keys) pipe.set(this.redis.key('routing', 'probe', key), this.id, 'PX', ttl, 'NX');
      const results = (await pipe.exec()) ?? [];
      return keys.filter((_, i) => results[i]?.[1] === 'OK');
    } catch {
      return [...keys];
    }
  }

  publishHealth(key: string, result: HealthResult): void {
    const client = this.redis.client;
    if (!client) return;
    client
      .eval(
        WRITE_HEALTH,
        1,
        this.redis.key('routing', 'health'),
        key,
        result.ok ? '1' : '0',
        (result.detail ?? '').slice(0, 300),
        String(Math.round(result.latencyMs ?? 0)),
      )
      .catch((err: Error) => this.logger.debug(`could not share the health of ${key}: ${err.message}`));
  }

  private publishCircuit(st: RouteState, t: CircuitTransition): void {
    const client = this.redis.client;
    if (!client) {
      st.shared = false;
      return;
    }
    const field = circuitField(st);
    const hash = this.redis.key('routing', 'circuits');
    if (t === 'opened') {
      const remaining = Math.max(0, Math.round(st.breaker.openUntil - performance.now()));
      client.eval(OPEN_CIRCUIT, 1, hash, field, String(remaining), String(st.breaker.consecutiveFailures)).then(
        () => (st.shared = true),
        (err: Error) => this.logger.debug(`could not share the circuit of ${field}: ${err.message}`),
      );
    } else {
      st.shared = false;
      client.hdel(hash, field).catch((err: Error) => this.logger.debug(`could not share the circuit of ${field}: ${err.message}`));
    }
  }

  /** Reads the shared circuits and health and adopts them; one round trip, off the request path. */
  async sync(): Promise<void> {
    const client = this.redis.client;
    if (!client || this.syncing) return;
    this.syncing = true;
    try {
      this.state.prime(this.registry.current().models);
      // Commands on one connection run in order: what this read returns already includes every
      // transition written before it was sent, but not those made locally while it was away.
      const sentAt = performance.now();
      const res = await client
        .pipeline()
        .time()
        .hgetall(this.redis.key('routing', 'circuits'))
        .hgetall(this.redis.key('routing', 'health'))
        .exec();
      if (!res || res.some(([err]) => err)) return;
      const [sec, micro] = res[0][1] as [string, string];
      const redisNow = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
      this.applyCircuits(res[1][1] as Record<string, string>, redisNow, sentAt);
      this.applyHealth(res[2][1] as Record<string, string>, redisNow);
    } catch (err) {
      this.logger.debug(`routing state sync failed: ${(err as Error).message}`);
    } finally {
      this.syncing = false;
    }
  }

  private applyCircuits(fields: Record<string, string>, redisNow: number, sentAt: number): void {
    const now = performance.now();
    for (const [field, json] of Object.entries(fields)) {
      const tagged = TAGGED_FIELD.exec(field);
      const key = tagged ? tagged[1] : field;
      const st = this.state.byKey(key);
      const c = parse<SharedCircuit>(json);
      if (!st || !c || typeof c.open_until !== 'number' || st.changedAt > sentAt) continue;
      // Opened on another server than this process's route points at (a reload moved it).
      if (tagged && tagged[2] !== endpointTag(st)) continue;
      const until = now + (c.open_until - redisNow);
      const b = st.breaker;
      // Closed here, open there: adopt it (unless its cooldown is over: a recovered probe ends it
      // by writing "open until now"). Half-open here while another process re-opened it: adopt that too.
      if (
        (b.state === 'closed' && until > now) ||
        (b.state === 'half_open' && until > now) ||
        (b.state === 'open' && b.openUntil !== until)
      ) {
        if (b.state === 'closed') this.logger.warn(`circuit of ${key} opened by another process`);
        b.open(now, until);
        b.consecutiveFailures = Math.max(b.consecutiveFailures, c.failures || 0);
      }
      st.shared = true;
    }
    for (const st of this.state.all()) {
      if (st.breaker.state === 'closed' || fields[circuitField(st)] !== undefined || st.changedAt > sentAt) continue;
      if (st.shared) {
        // It was in Redis and is gone: another process saw the endpoint answer again.
        st.breaker.reset();
        st.shared = false;
        this.logger.log(`circuit of ${st.key} closed by another process`);
      } else if (st.breaker.state === 'open') {
        // Opened while Redis was unreachable: share it now.
        this.publishCircuit(st, 'opened');
      }
    }
  }

  private applyHealth(fields: Record<string, string>, redisNow: number): void {
    const intervalMs = this.registry.current().routing.healthCheckSeconds * 1000;
    if (intervalMs <= 0) return;
    const stale = Math.max(3000, intervalMs * 3);
    for (const [key, json] of Object.entries(fields)) {
      const h = parse<SharedHealth>(json);
      if (!h || typeof h.at !== 'number') continue;
      const age = redisNow - h.at;
      const e = this.state.findEndpoint(key);
      if (!e || age > stale) continue;
      const at = Date.now() - Math.max(0, age);
      if (e.checkedAt !== undefined && e.checkedAt >= at) continue;
      const before = e.status;
      this.state.setHealth(key, { ok: h.ok, detail: h.detail || undefined, latencyMs: h.latency_ms, checkedAt: at });
      if (before !== e.status) this.logger.log(`endpoint ${key} is ${e.status} (probed by another process)`);
    }
  }
}

function parse<T>(json: string): T | undefined {
  try {
    return JSON.parse(json) as T;
  } catch {
    return undefined;
  }
}
