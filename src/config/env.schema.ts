import { plainToInstance, Transform, Type } from 'class-transformer';
import {
  IsBoolean,
  IsIn,
  IsInt,
  IsOptional,
  IsString,
  Matches,
  Max,
  Min,
  MinLength,
  ValidationError,
  validateSync,
  ValidateBy,
  ValidateIf,
} from 'class-validator';
import { constants } from 'node:buffer';
import { MAX_TIMER_MS } from '../common/deadline';
import { parseByteSize } from './app-config';
import { withoutUrlCredentials } from './field-reader';
import { MAX_WORKERS, workerCount } from './workers';

const { MAX_STRING_LENGTH } = constants;

/** A size in bytes or with a unit (`10mb`, `512kb`), as parseByteSize reads it. */
const BYTE_SIZE = /^\d+(\.\d+)?\s*(b|kb|mb|gb)?$/i;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** What main.ts accepts, so that a value validated here never stops the start there. */
function isWorkerCount(value: unknown): boolean {
  if (typeof value !== 'string') return false;
  try {
    workerCount(value);
    return true;
  } catch {
    return false;
  }
}

/** Accepts true/false/1/0/yes/no (any case); anything else stays as-is and fails @IsBoolean. */
function toBool({ value }: { value: unknown }): unknown {
  if (typeof value !== 'string') return value;
  const v = value.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  return value;
}

/** Empty strings in .env mean "not set". */
function emptyToUndefined({ value }: { value: unknown }): unknown {
  return typeof value === 'string' && value.trim() === '' ? undefined : value;
}

/**
 * Every environment variable the gateway reads. `.env.example` documents each one; keep the two
 * in step. Values are validated once at boot; code reads them through `AppConfig`, never
 * `process.env`.
 */
export class Env {
  @IsIn(['development', 'production', 'test'])
  NODE_ENV: 'development' | 'production' | 'test' = 'development';

  @Type(() => Number)
  @IsInt()
  @Min(0)
  @Max(65535)
  PORT = 8080;

  @IsString()
  @MinLength(1)
  HOST = '0.0.0.0';

  /** Processes serving (node:cluster): 1, a number, or `auto` (one per CPU). Read by main.ts. */
  @ValidateBy({
    name: 'workers',
    validator: { validate: isWorkerCount, defaultMessage: () => `WORKERS must be a whole number from 1 to ${MAX_WORKERS}, or "auto"` },
  })
  WORKERS = '1';

  @IsIn(LOG_LEVELS)
  LOG_LEVEL: LogLevel = 'info';

  /** Largest accepted request body, in bytes or with a unit (`10mb`, `512kb`). */
  @Matches(BYTE_SIZE, { message: 'BODY_LIMIT must look like 10mb, 512kb or a byte count' })
  BODY_LIMIT = '10mb';

  /** How long a request body may pause (no byte arriving) before the request is refused with 408; 0: no limit of ours. */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  @Max(2_147_483_647, { message: 'BODY_IDLE_TIMEOUT_MS must be at most 2147483647 (about 24 days; 0 turns the limit off)' })
  BODY_IDLE_TIMEOUT_MS = 30_000;

  /**
   * The least average pace of a request body, in bytes a second, after BODY_RATE_GRACE_MS: a
   * slower one is refused with 408 and its connection closed. 0: no such limit.
   */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  BODY_MIN_BYTES_PER_SECOND = 16_384;

  /** How long a request body may take before BODY_MIN_BYTES_PER_SECOND applies to it (unchecked while that is 0: off). */
  @ValidateIf((o: { BODY_MIN_BYTES_PER_SECOND?: unknown }) => Number(o.BODY_MIN_BYTES_PER_SECOND) !== 0)
  @Type(() => Number)
  @IsInt()
  // Less would refuse a body that had not yet come at all (a client waiting for 100-continue).
  @Min(1000, { message: 'BODY_RATE_GRACE_MS must be at least 1000; set BODY_MIN_BYTES_PER_SECOND=0 to turn the pace limit off' })
  @Max(2_147_483_647, { message: 'BODY_RATE_GRACE_MS must be at most 2147483647 (about 24 days)' })
  BODY_RATE_GRACE_MS = 20_000;

  /**
   * The most client connections a process holds open at once; more are closed as they come.
   * Unset: half the process's open-file limit (the rest is for upstreams, the database, files);
   * 0: no cap.
   */
  @Transform(emptyToUndefined)
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(0)
  MAX_CONNECTIONS?: number;

  @IsString()
  @MinLength(1)
  MODELS_CONFIG_PATH = 'config/models.yaml';

  @IsString()
  @MinLength(1)
  ROUTING_CONFIG_PATH = 'config/routing.yaml';

  // --- storage -----------------------------------------------------------------------------
  @Transform(emptyToUndefined)
  @IsOptional()
  @IsIn(['sqlite', 'postgres'])
  DB_BACKEND?: 'sqlite' | 'postgres';

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^postgres(ql)?:\/\//, { message: 'DATABASE_URL must be a postgres:// URL' })
  DATABASE_URL?: string;

  @IsString()
  DB_HOST = '127.0.0.1';

  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(65535)
  DB_PORT = 5432;

  @IsString()
  DB_NAME = 'hybridinference';

  @IsString()
  DB_USER = 'postgres';

  @IsString()
  DB_PASSWORD = '';

  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(200)
  DB_POOL_SIZE = 10;

  @IsString()
  @MinLength(1)
  DB_SQLITE_PATH = 'var/data/hybridinference.sqlite';

  @Transform(toBool)
  @IsBoolean()
  DB_MIGRATIONS_RUN = true;

  @Transform(toBool)
  @IsBoolean()
  DB_STORE_FULL_CONTENT = false;

  /**
   * Largest request or response body a row stores (JSON, UTF-8 bytes; units as BODY_LIMIT). A
   * larger one is stored as its head, marked `truncated` (see stored-content.ts).
   */
  @Matches(/^\d+(\.\d+)?\s*(b|kb|mb|gb)?$/i, { message: 'DB_STORE_CONTENT_LIMIT must look like 10mb, 512kb or a byte count' })
  DB_STORE_CONTENT_LIMIT = '10mb';

  /** How long boot waits for the database before starting anyway (logs spool until it is up). */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  DB_CONNECT_TIMEOUT_MS = 5000;

  /**
   * The longest a query may go unanswered (PostgreSQL): a database that stops answering without
   * closing its connections fails queries after this, so request logs spool and key checks fail.
   */
  @Type(() => Number)
  @IsInt()
  @Min(100)
  DB_QUERY_TIMEOUT_MS = 10000;

  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(10000)
  REQUEST_LOG_BATCH_SIZE = 200;

  @Type(() => Number)
  @IsInt()
  @Min(10)
  REQUEST_LOG_FLUSH_MS = 1000;

  /**
   * How long an insert may go unanswered before a ping asks whether the database is silent (then
   * its rows and those queued behind it are copied to the spool file, where a crash does not lose
   * them) or only slow (then it is waited for).
   */
  @Type(() => Number)
  @IsInt()
  @Min(100)
  REQUEST_LOG_MAX_HOLD_MS = 5000;

  /** Rows held in memory before overflow goes straight to the spool file. */
  @Type(() => Number)
  @IsInt()
  @Min(100)
  REQUEST_LOG_MAX_QUEUE = 20000;

  /**
   * With DB_STORE_FULL_CONTENT: the stored bodies (as JSON text) the request log may hold in
   * memory, queued or on their way to the spool. Past it, rows are still logged, without their
   * bodies (metadata.content_left_out), rather than the process running out of memory.
   */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  REQUEST_LOG_MAX_CONTENT_BYTES = 256 * 1024 * 1024;

  @IsString()
  @MinLength(1)
  REQUEST_LOG_SPOOL_DIR = 'var/spool';

  @Type(() => Number)
  @IsInt()
  @Min(100)
  REQUEST_LOG_REPLAY_MS = 5000;

  // --- upstream calls ----------------------------------------------------------------------
  @Type(() => Number)
  @IsInt()
  @Min(1)
  UPSTREAM_CONNECT_TIMEOUT_MS = 10_000;

  /** From sending the request to the upstream's response headers (streams and quick calls; a one-shot generation has the total time). */
  @Type(() => Number)
  @IsInt()
  @Min(1)
  UPSTREAM_FIRST_BYTE_TIMEOUT_MS = 60_000;

  /** Streams: from sending the request to the first content chunk. */
  @Type(() => Number)
  @IsInt()
  @Min(1)
  UPSTREAM_FIRST_TOKEN_TIMEOUT_MS = 120_000;

  /** Longest silence between two body chunks. */
  @Type(() => Number)
  @IsInt()
  @Min(1)
  UPSTREAM_IDLE_TIMEOUT_MS = 60_000;

  /** Whole request, all attempts included. `timeout:` in routing.yaml overrides it. */
  @Type(() => Number)
  @IsInt()
  @Min(1)
  UPSTREAM_TOTAL_TIMEOUT_MS = 600_000;

  /**
   * Largest answer read whole from an upstream (a call that does not stream), in bytes or with a
   * unit. Streams are bounded per event instead (MAX_EVENT_CHARS).
   */
  @Matches(BYTE_SIZE, { message: 'UPSTREAM_BODY_LIMIT must look like 64mb, 512kb or a byte count' })
  UPSTREAM_BODY_LIMIT = '64mb';

  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(10_000)
  UPSTREAM_MAX_CONNECTIONS = 256;

  @Type(() => Number)
  @IsInt()
  @Min(100)
  UPSTREAM_KEEPALIVE_MS = 30_000;

  /** Interval of `: keepalive` SSE comments while a stream waits for its first token, once an upstream accepted it. */
  @Type(() => Number)
  @IsInt()
  @Min(10)
  STREAM_KEEPALIVE_MS = 5000;

  /**
   * How long a client may take none of the answer queued for it (a stream it stopped reading, a
   * large answer it does not fetch) before it is disconnected as gone; 0: no limit.
   */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  @Max(2_147_483_647, { message: 'CLIENT_WRITE_TIMEOUT_MS must be at most 2147483647 (about 24 days; 0 turns the limit off)' })
  CLIENT_WRITE_TIMEOUT_MS = 60_000;

  /** On SIGTERM: how long open requests may run before they are cut. */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  SHUTDOWN_GRACE_MS = 30_000;

  @Transform(toBool)
  @IsBoolean()
  METRICS_ENABLED = true;

  /**
   * Browser pages that may call the gateway (CORS): empty for none, `*` for any, or origins as
   * browsers send them, comma-separated (`https://app.example.com,http://localhost:3000`).
   */
  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^\s*(\*|[a-z][a-z0-9+.-]*:\/\/[^/\s,?#]+(\s*,\s*[a-z][a-z0-9+.-]*:\/\/[^/\s,?#]+)*)\s*$/i, {
    message: 'CORS_ORIGINS must be empty, * or comma-separated origins such as https://app.example.com (scheme://host[:port], no path)',
  })
  CORS_ORIGINS?: string;

  /** How far the old generation may grow past the live heap before V8 collects it (0: V8's own choice, 10-300%). */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  @Max(300)
  @ValidateIf((o: Env) => o.HEAP_GROWTH_PERCENT !== 0)
  @Min(10, { message: 'HEAP_GROWTH_PERCENT must be 0 (V8 decides) or from 10 to 300' })
  HEAP_GROWTH_PERCENT = 200;

  /** After a busy spell, once no request has been open this long, one full collection hands memory back (0: never). */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  IDLE_GC_AFTER_MS = 30_000;

  // --- shared state and administration ----------------------------------------------------
  /** redis:// or rediss:// URL. Set, it shares limits and routing state between processes and replicas. */
  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^rediss?:\/\//, { message: 'REDIS_URL must be a redis:// or rediss:// URL' })
  REDIS_URL?: string;

  @IsString()
  REDIS_KEY_PREFIX = 'hi:';

  /**
   * How long a Redis command may go unanswered. Past it the command fails (the caller uses its
   * per-process state) and Redis is taken as down until a ping answers: a Redis that stalls
   * without closing its connection would otherwise hold every request with limits.
   */
  @Type(() => Number)
  @IsInt()
  @Min(50)
  REDIS_COMMAND_TIMEOUT_MS = 500;

  /**
   * How long Redis keeps a request's concurrency slot and budget reservation without word from
   * the process that admitted it; that process renews it every third of this while the request
   * runs. A process that died (a crashed worker, a killed replica) frees its requests' slots
   * within this time.
   */
  @Type(() => Number)
  @IsInt()
  @Min(1000)
  REDIS_LEASE_MS = 30_000;

  /** Bearer token for /admin/*. Unset, the admin API answers 403. */
  @Transform(emptyToUndefined)
  @IsOptional()
  @IsString()
  @MinLength(16, { message: 'ADMIN_TOKEN must be at least 16 characters' })
  // HTTP header values reach Node as Latin-1, trimmed: a token with other characters, or with
  // spaces at either end, could never be sent.
  @Matches(/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/, {
    message: 'ADMIN_TOKEN must be printable ASCII, without spaces at either end (clients send it in a header)',
  })
  ADMIN_TOKEN?: string;

  // --- client access -----------------------------------------------------------------------
  /** true: every API call needs an API key (`hyi-...`). false: anonymous calls are admitted (and logged). */
  @Transform(toBool)
  @IsBoolean()
  USER_AUTH_ENABLED = false;

  /** Key for the HMAC-SHA256 under which API keys are stored. Changing it invalidates every key. */
  @Transform(emptyToUndefined)
  @ValidateIf((e: Env) => e.USER_AUTH_ENABLED === true || e.API_KEY_SECRET !== undefined)
  @IsString({ message: 'API_KEY_SECRET is required when USER_AUTH_ENABLED=true' })
  @MinLength(32, { message: 'API_KEY_SECRET must be at least 32 characters' })
  API_KEY_SECRET?: string = undefined;

  /** How long a looked-up API key is trusted before it is read again (revocations show within it). */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  @Max(600_000)
  API_KEY_CACHE_TTL_MS = 10_000;

  // --- subscription accounts (Claude Code and Codex OAuth logins) -------------------------
  /** AES-256-GCM key for account tokens at rest: 32 bytes as 64 hex characters or base64. Unset, no tokens are stored. */
  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^([0-9a-fA-F]{64}|[A-Za-z0-9+/_-]{43}=?)$/, {
    message: 'SUBSCRIPTION_ENCRYPTION_KEY must be 32 bytes: 64 hex characters or base64 (openssl rand -base64 32)',
  })
  SUBSCRIPTION_ENCRYPTION_KEY?: string = undefined;

  /** Imported at start-up when present (see docs/configuration.md for the formats). */
  @IsString()
  @MinLength(1)
  SUBSCRIPTION_CLAUDE_ACCOUNTS_FILE = 'var/data/claude_accounts.json';

  @IsString()
  @MinLength(1)
  SUBSCRIPTION_CODEX_ACCOUNTS_FILE = 'var/data/codex_accounts.json';

  /** How often each process re-reads account state from the database (other replicas' changes) and refreshes tokens ahead of expiry; at most every 50 s (syncPeriodMs). */
  @Type(() => Number)
  @IsInt()
  @Min(50)
  SUBSCRIPTION_SYNC_MS = 5000;

  /** Refresh an access token this long before it expires; at most half the lifetime of one this process got (at least 30 s). */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  SUBSCRIPTION_REFRESH_MARGIN_MS = 300_000;

  /**
   * How long a request waits for its account's token refresh before it tries another account (the
   * refresh goes on); while that refresh has not answered, later requests do not wait on it.
   */
  @Type(() => Number)
  @IsInt()
  @Min(100)
  SUBSCRIPTION_REFRESH_WAIT_MS = 20_000;

  /** Cooldown after a 429 that names no reset time; doubles with each consecutive failure. */
  @Type(() => Number)
  @IsInt()
  @Min(0)
  SUBSCRIPTION_COOLDOWN_MS = 60_000;

  /** Longest cooldown, whatever the provider's reset time says. */
  @Type(() => Number)
  @IsInt()
  @Min(1000)
  SUBSCRIPTION_MAX_COOLDOWN_MS = 7 * 24 * 3_600_000;

  /** Consecutive authentication failures (401 after a refresh, failed refreshes) that put an account in cooldown. */
  @Type(() => Number)
  @IsInt()
  @Min(1)
  SUBSCRIPTION_FAILURE_THRESHOLD = 3;

  @IsString()
  @Matches(/^https?:\/\//, { message: 'SUBSCRIPTION_CLAUDE_TOKEN_URL must be an http(s) URL' })
  SUBSCRIPTION_CLAUDE_TOKEN_URL = 'https://platform.claude.com/v1/oauth/token';

  @IsString()
  @MinLength(1)
  SUBSCRIPTION_CLAUDE_CLIENT_ID = '9d1c250a-e61b-44d9-88ed-5944d1962f5e';

  @IsString()
  @Matches(/^https?:\/\//, { message: 'SUBSCRIPTION_CODEX_TOKEN_URL must be an http(s) URL' })
  SUBSCRIPTION_CODEX_TOKEN_URL = 'https://auth.openai.com/oauth/token';

  @IsString()
  @MinLength(1)
  SUBSCRIPTION_CODEX_CLIENT_ID = 'app_EMoamEEZ73f0CkXaXp7hrann';
}

/** Validates raw variables into an `Env`; throws one error listing every bad variable by name. */
/** `*_MS` variables that never reach a timer. */
const NOT_TIMERS: ReadonlySet<string> = new Set([
  'SUBSCRIPTION_REFRESH_MARGIN_MS',
  'SUBSCRIPTION_COOLDOWN_MS',
  'SUBSCRIPTION_MAX_COOLDOWN_MS',
]);

/**
 * Bounds of DB_STORE_CONTENT_LIMIT (bytes). Above: a row, with its two bodies, is one statement
 * that PostgreSQL takes ~35 ms per MB to insert (100 MB of jsonb: 3.7 s, measured), so 2 x 32 MB
 * stays well within the default DB_QUERY_TIMEOUT_MS (and far from jsonb's 256 MB string and the
 * protocol's 1 GB message). Below: too small for even the truncation marker.
 */
export const STORE_CONTENT_LIMIT = { min: 1024, max: 32 * 1024 ** 2 } as const;

export function validateEnv(raw: Record<string, unknown>): Env {
  const defaults = new Env();
  const known = Object.keys(defaults);
  const picked: Record<string, unknown> = {};
  for (const key of [...known, 'DB_BACKEND', 'DATABASE_URL', 'REDIS_URL', 'ADMIN_TOKEN']) {
    const v = raw[key];
    if (v === undefined) continue;
    // `PORT=` in a .env file means "not set", as for the text variables; Number('') would be 0.
    if (typeof (defaults as unknown as Record<string, unknown>)[key] === 'number' && typeof v === 'string' && v.trim() === '') continue;
    picked[key] = v;
  }
  const env = plainToInstance(Env, picked, { exposeDefaultValues: true });
  const errors = validateSync(env, { skipMissingProperties: false });
  // Node's timers hold at most 2^31-1 ms (about 24.8 days); a longer one fires at once. (Times
  // only compared with the clock, such as a cooldown's length, are not timers.)
  for (const key of known) {
    const v = (env as unknown as Record<string, unknown>)[key];
    if (key.endsWith('_MS') && !NOT_TIMERS.has(key) && typeof v === 'number' && v > MAX_TIMER_MS && !errors.some((e) => e.property === key))
      errors.push(
        Object.assign(new ValidationError(), {
          property: key,
          constraints: { max: `${key} must be at most ${MAX_TIMER_MS} (about 24 days)` },
        }),
      );
  }
  // An answer is read into one string: past V8's longest string the read fails on its own, with
  // an error that names neither the route nor this variable.
  const answerLimit = BYTE_SIZE.test(env.UPSTREAM_BODY_LIMIT) ? parseByteSize(env.UPSTREAM_BODY_LIMIT) : undefined;
  if (answerLimit !== undefined && (answerLimit < 1024 || answerLimit > MAX_STRING_LENGTH))
    errors.push(
      Object.assign(new ValidationError(), {
        property: 'UPSTREAM_BODY_LIMIT',
        constraints: {
          range: `UPSTREAM_BODY_LIMIT must be from 1kb to ${MAX_STRING_LENGTH} bytes (just under 512mb: V8's longest string)`,
        },
      }),
    );
  const contentLimit = /^\d/.test(env.DB_STORE_CONTENT_LIMIT) ? parseByteSize(env.DB_STORE_CONTENT_LIMIT) : undefined;
  if (contentLimit !== undefined && !(contentLimit >= STORE_CONTENT_LIMIT.min && contentLimit <= STORE_CONTENT_LIMIT.max))
    errors.push(
      Object.assign(new ValidationError(), {
        property: 'DB_STORE_CONTENT_LIMIT',
        constraints: {
          range: 'DB_STORE_CONTENT_LIMIT must be from 1kb to 32mb (a row carries two bodies, and must go in within DB_QUERY_TIMEOUT_MS)',
        },
      }),
    );
  if (errors.length > 0) {
    const lines = errors.map((e) => {
      // A value that is not a number at all fails its range too ("must not be greater than
      // 65535; must not be less than 0"): only the type is said then.
      const c = e.constraints ?? {};
      const type = c.isInt ?? c.isNumber;
      const why = type ?? Object.values(c).join('; ');
      // A malformed secret is still mostly the secret: name it, never print it.
      // So are a URL's credentials (DATABASE_URL, REDIS_URL).
      const value = raw[e.property];
      const shown = /(KEY|TOKEN|PASSWORD|SECRET)$/.test(e.property)
        ? '(hidden)'
        : JSON.stringify(typeof value === 'string' ? withoutUrlCredentials(value) : value);
      return `  ${e.property}=${shown}: ${why}`;
    });
    throw new Error(`Invalid environment:\n${lines.join('\n')}`);
  }
  return env;
}
