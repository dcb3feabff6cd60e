import cluster from 'node:cluster';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { Not, type Repository } from 'typeorm';
import { ServiceUnavailableError } from '../common/errors';
import { usdToPico } from '../common/money';
import { startOfUtcDay, startOfUtcMonth, utcDay, utcMonth, type KeyLimits, type Principal, type SpendBaseline } from '../common/principal';
import { ConflictError, NotFoundError } from '../common/resource.errors';
import { API_KEY_CHANGED } from '../cluster';
import { AppConfig } from '../config/app-config';
import { RedisService } from '../redis/redis.service';
import { databaseUnreachable } from './database-outage';
import { decodeCursor, encodeCursor } from './page-cursor';
import { DatabaseService } from './database.service';
import { ApiKey, type ApiKeyStatus, type ListedKeyStatus } from './entities/api-key.entity';
import { StatsRepository } from './stats.repository';

export const KEY_PREFIX = 'hyi-';
const PREFIX_SHOWN = 12;
const MAX_CACHED = 10_000;
/** Redis channel (under REDIS_KEY_PREFIX) carrying the id of a key changed on some replica. */
const KEY_CHANGED_CHANNEL = 'api-key-changed';

/** A key as the request path sees it: the principal plus what decides whether it may call. */
export interface KeyState {
  principal: Principal;
  status: ApiKeyStatus;
  /** ms since the epoch; null = never. */
  expiresAt: number | null;
}

export interface ApiKeyInput {
  name?: string;
  rpm_limit?: number | null;
  tpm_limit?: number | null;
  max_concurrency?: number | null;
  daily_budget_usd?: string | null;
  monthly_budget_usd?: string | null;
  expires_at?: Date | null;
  notes?: string | null;
  status?: 'active' | 'suspended';
}

export interface KeyListFilter {
  status?: ListedKeyStatus;
  limit: number;
  offset: number;
  /** The previous page's `next_cursor`: the keys after it (instead of an offset). */
  cursor?: string;
}

interface CacheEntry {
  state: KeyState | null;
  expires: number;
  /**
   * The last read of this key failed (the database away, or silent): until one succeeds, the
   * entry is answered at once and read again behind the request, rather than every request
   * waiting out a connect or query timeout for the stale entry it then gets anyway.
   */
  readFailed?: boolean;
}

/**
 * API keys: creation and administration, and the lookup the request path makes for every call.
 * Secrets are `hyi-` + 256 random bits, stored only as HMAC-SHA256 under API_KEY_SECRET.
 * Lookups are cached for API_KEY_CACHE_TTL_MS (unknown keys too, so a flood of bad keys does not
 * reach the database). A change made here is seen at once by this process; the other workers of
 * a multi-process gateway are told through the primary, and with REDIS_URL every process of every
 * replica is told through Redis, so they drop the key a moment later. A process that was cut off
 * from Redis may have missed such messages: when its subscription is back, it reads every cached
 * key from the database again at its next use. While the database is unreachable, cached keys keep working past their TTL and
 * a lookup of any other fails (ApiKeyGuard: a 503 when keys are required, never a 401).
 */
@Injectable()
export class ApiKeysService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('ApiKeys');
  private readonly cache = new Map<string, CacheEntry>();
  private readonly loading = new Map<string, Promise<KeyState | null>>();
  /** Bumped by every invalidation, so that a lookup which started before it does not cache what it read. */
  private generation = 0;
  private readonly secret?: string;
  private readonly ttlMs: number;
  private readonly onWorkerMessage = (msg: { type?: string; id?: unknown }) => {
    if (msg?.type === API_KEY_CHANGED && typeof msg.id === 'string') this.forget(msg.id);
  };

  constructor(
    config: AppConfig,
    private readonly db: DatabaseService,
    private readonly stats: StatsRepository,
    private readonly redis: RedisService,
  ) {
    this.secret = config.env.API_KEY_SECRET;
    this.ttlMs = config.env.API_KEY_CACHE_TTL_MS;
  }

  onApplicationBootstrap(): void {
    if (cluster.isWorker) process.on('message', this.onWorkerMessage);
    // Changes published while this process was cut off from Redis never arrive: when the
    // subscription is back, every cached key is read again rather than trusted until its TTL.
    this.redis.subscribe(
      KEY_CHANGED_CHANNEL,
      (id) => this.forget(id),
      () => this.expireAll(),
    );
  }

  onApplicationShutdown(): void {
    process.off('message', this.onWorkerMessage);
  }

  /** Whether keys can be made and checked (API_KEY_SECRET is set). */
  get configured(): boolean {
    return this.secret !== undefined;
  }

  hash(key: string): string {
    if (!this.secret) throw new ServiceUnavailableError('API keys need API_KEY_SECRET; set it (at least 32 characters) and restart');
    return createHmac('sha256', this.secret).update(key, 'utf8').digest('hex');
  }

  /** The key's state, or null when no such key exists. Cached; see the class comment. */
  async lookup(presented: string): Promise<KeyState | null> {
    if (!this.secret || !presented.startsWith(KEY_PREFIX) || presented.length > 200) return null;
    const hash = this.hash(presented);
    const now = Date.now();
    const hit = this.cache.get(hash);
    if (hit && hit.expires > now) return hit.state;
    let pending = this.loading.get(hash);
    if (!pending) {
      pending = this.load(hash, hit).finally(() => this.loading.delete(hash));
      this.loading.set(hash, pending);
    }
    if (hit?.readFailed) {
      pending.catch(() => undefined);
      return hit.state;
    }
    return pending;
  }

  private async load(hash: string, stale: CacheEntry | undefined): Promise<KeyState | null> {
    const generation = this.generation;
    let state: KeyState | null;
    try {
      const row = await this.repo().findOne({ where: { key_hash: hash } });
      state = row ? await this.toState(row) : null;
    } catch (err) {
      if (stale) {
        stale.readFailed = true;
        this.logger.warn(`cannot refresh an API key (${(err as Error).message}); using the cached one`);
        return stale.state;
      }
      if (err instanceof ServiceUnavailableError) throw err;
      throw new ServiceUnavailableError(`The API key cannot be checked right now (${(err as Error).message}); try again shortly`);
    }
    if (this.ttlMs > 0 && generation === this.generation) {
      this.cache.delete(hash);
      if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(hash, { state, expires: Date.now() + this.ttlMs });
    }
    return state;
  }

  private async toState(row: ApiKey): Promise<KeyState> {
    const limits: KeyLimits = {
      rpm: row.rpm_limit,
      tpm: row.tpm_limit,
      concurrency: row.max_concurrency,
      dailyBudgetPico: budget(row.daily_budget_usd),
      monthlyBudgetPico: budget(row.monthly_budget_usd),
    };
    const principal: Principal = { id: row.id, name: row.name, prefix: row.key_prefix, limits };
    if (limits.dailyBudgetPico !== null || limits.monthlyBudgetPico !== null) principal.baseline = await this.baseline(row.id);
    return { principal, status: row.status, expiresAt: row.expires_at ? row.expires_at.getTime() : null };
  }

  /**
   * What the key already spent today and this month (UTC), from the request log: so that budgets
   * survive restarts, and a spend counter Redis lost starts again from the truth.
   */
  async baseline(id: string): Promise<SpendBaseline> {
    const now = Date.now();
    const [dayPico, monthPico] = await Promise.all([
      this.stats.spendSince(id, startOfUtcDay(now)),
      this.stats.spendSince(id, startOfUtcMonth(now)),
    ]);
    return { day: utcDay(now), dayPico, month: utcMonth(now), monthPico };
  }

  /** Forgets a key here and in every other process, so the next request anywhere reads it again. */
  invalidate(id: string): void {
    this.forget(id);
    // With Redis as well, the other workers hear it twice; forgetting twice costs nothing, and
    // the primary still tells them while Redis is down.
    if (cluster.isWorker) process.send?.({ type: API_KEY_CHANGED, id }, undefined, undefined, () => undefined);
    this.redis.publish(KEY_CHANGED_CHANNEL, id);
  }

  /**
   * Every cached key is read from the database at its next use. Expired rather than dropped: while
   * the database is unreachable, a cached key keeps working (see `load`).
   */
  private expireAll(): void {
    this.generation++;
    for (const e of this.cache.values()) e.expires = 0;
  }

  /** Forgets a key in this process only. */
  private forget(id: string): void {
    this.generation++;
    for (const [hash, e] of this.cache) if (e.state?.principal.id === id) this.cache.delete(hash);
  }

  // --- administration ---------------------------------------------------------------------

  async create(input: ApiKeyInput & { name: string }): Promise<{ key: ApiKey; secret: string }> {
    const secret = newSecret();
    const now = new Date();
    const row = this.repo().create({
      id: randomUUID(),
      name: input.name,
      key_hash: this.hash(secret),
      key_prefix: secret.slice(0, PREFIX_SHOWN),
      status: input.status ?? 'active',
      rpm_limit: input.rpm_limit ?? null,
      tpm_limit: input.tpm_limit ?? null,
      max_concurrency: input.max_concurrency ?? null,
      daily_budget_usd: input.daily_budget_usd ?? null,
      monthly_budget_usd: input.monthly_budget_usd ?? null,
      expires_at: input.expires_at ?? null,
      notes: input.notes ?? null,
      created_at: now,
      updated_at: now,
      revoked_at: null,
    });
    await this.repo().insert(row);
    return { key: await this.get(row.id), secret };
  }

  /**
   * Newest first; `total` counts every key the status filter matches. Ordered and paged on the
   * creation time to the millisecond (the cursor's precision: PostgreSQL keeps microseconds for a
   * key inserted by hand, and SQLite may hold one without its milliseconds), then the id.
   */
  async list(f: KeyListFilter): Promise<{ data: ApiKey[]; total: number; next_cursor: string | null }> {
    const qb = this.repo().createQueryBuilder('k');
    // An active key past its expiry is listed as expired, and filtered so.
    const now = new Date();
    if (f.status === 'expired') qb.where("k.status = 'active' AND k.expires_at <= :now", { now });
    else if (f.status === 'active') qb.where("k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > :now)", { now });
    else if (f.status) qb.where('k.status = :status', { status: f.status });
    const total = await qb.clone().getCount();
    const at = this.db.dialect === 'postgres' ? "date_trunc('milliseconds', k.created_at)" : "strftime('%Y-%m-%d %H:%M:%f', k.created_at)";
    const c = f.cursor === undefined ? undefined : decodeCursor(f.cursor);
    if (c) qb.andWhere(`(${at} < :cAt OR (${at} = :cAt AND k.id < :cId))`, { cAt: c.at, cId: c.id });
    else qb.offset(f.offset);
    const rows = await qb
      .orderBy(at, 'DESC')
      .addOrderBy('k.id', 'DESC')
      .limit(f.limit + 1)
      .getMany();
    const data = rows.slice(0, f.limit);
    const last = data.at(-1);
    return { data, total, next_cursor: rows.length > f.limit && last ? encodeCursor(last.created_at, last.id) : null };
  }

  async get(id: string): Promise<ApiKey> {
    const row = await this.repo().findOne({ where: { id } });
    if (!row) throw new NotFoundError(`No API key with id "${id}"`, 'api_key_not_found', 'id');
    return row;
  }

  async update(id: string, patch: ApiKeyInput): Promise<ApiKey> {
    const current = await this.get(id);
    if (current.status === 'revoked')
      throw new ConflictError('This API key is revoked; revoked keys cannot be changed (create a new one)', 'api_key_revoked');
    const changes: Partial<ApiKey> = { updated_at: new Date() };
    for (const k of [
      'name',
      'rpm_limit',
      'tpm_limit',
      'max_concurrency',
      'daily_budget_usd',
      'monthly_budget_usd',
      'expires_at',
      'notes',
      'status',
    ] as const) {
      if (patch[k] !== undefined) (changes as Record<string, unknown>)[k] = patch[k];
    }
    // Only while it is not revoked, in the same statement: a revoke made between the read above
    // and this write must not be undone by a PATCH that sets the status.
    const done = await this.repo().update({ id, status: Not('revoked' as const) }, changes);
    if (done.affected === 0) throw await this.whyUnchanged(id);
    this.invalidate(id);
    return this.get(id);
  }

  /** An update that changed no row: the key is gone (404), or revoked meanwhile (409). */
  private async whyUnchanged(id: string): Promise<ConflictError> {
    await this.get(id);
    return new ConflictError('This API key is revoked; revoked keys cannot be changed (create a new one)', 'api_key_revoked');
  }

  /** Revokes for good (idempotent). */
  async revoke(id: string): Promise<ApiKey> {
    const current = await this.get(id);
    if (current.status !== 'revoked') {
      const now = new Date();
      await this.repo().update({ id }, { status: 'revoked', revoked_at: now, updated_at: now });
    }
    this.invalidate(id);
    return this.get(id);
  }

  /** A new secret for the same key (id, limits, history); the old secret stops working. */
  async regenerate(id: string): Promise<{ key: ApiKey; secret: string }> {
    const current = await this.get(id);
    if (current.status === 'revoked') throw new ConflictError('This API key is revoked; create a new one instead', 'api_key_revoked');
    const secret = newSecret();
    // Against the secret read above (its prefix: 48 random bits): of regenerations made at once, one wins and the others are
    // told so, instead of each returning a secret that another one's write replaced.
    const changes = { key_hash: this.hash(secret), key_prefix: secret.slice(0, PREFIX_SHOWN), updated_at: new Date() };
    const done = await this.repo().update({ id, key_prefix: current.key_prefix, status: Not('revoked' as const) }, changes);
    if (done.affected === 0) {
      const now = await this.get(id);
      if (now.status === 'revoked') throw new ConflictError('This API key is revoked; create a new one instead', 'api_key_revoked');
      throw new ConflictError(
        'The API key was changed by another request at the same time; send the regeneration again',
        'api_key_changed',
      );
    }
    this.invalidate(id);
    // This regeneration's own view (read back, a later one's prefix could show beside our secret).
    return { key: Object.assign(current, { key_prefix: changes.key_prefix, updated_at: changes.updated_at }), secret };
  }

  private repo(): Repository<ApiKey> {
    const ds = this.db.dataSource;
    if (!ds) throw databaseUnreachable();
    return ds.getRepository(ApiKey);
  }
}

function newSecret(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

function budget(value: string | number | null): bigint | null {
  if (value === null || value === undefined) return null;
  try {
    return usdToPico(value);
  } catch {
    return null;
  }
}
