import { didYouMean, nearKeys } from '../common/near-keys';
import { MAX_TIMER_MS } from '../common/deadline';
import { FieldReader } from './field-reader';
import type { CircuitPolicy, Deployment, RetryPolicy, RoutingDef, StatsWindowDef } from './registry.types';
import { ConfigError, type YamlPath, type YamlSource } from './yaml-source';

export const DEFAULT_STRATEGY = 'weighted';

/** routing.yaml is optional: without it every model uses its own `router:` or weighted choice. */
export const DEFAULT_RETRY: RetryPolicy = { maxRetries: 2, backoffMs: 200, maxBackoffMs: 5000, maxRetryAfterMs: 10_000, maxAttempts: 6 };
export const DEFAULT_CIRCUIT: CircuitPolicy = { failureThreshold: 5, cooldownMs: 30_000, halfOpenRequests: 1 };
export const DEFAULT_STATS_WINDOW: StatsWindowDef = { size: 50, seconds: 300 };

export const EMPTY_ROUTING: RoutingDef = {
  strategy: DEFAULT_STRATEGY,
  localFraction: 0.5,
  healthCheckSeconds: 0,
  localDeployments: [],
  remoteDeployments: [],
  retry: DEFAULT_RETRY,
  circuitBreaker: DEFAULT_CIRCUIT,
  healthCheckTimeoutMs: 5000,
  statsWindow: DEFAULT_STATS_WINDOW,
  stateSyncMs: 1000,
};

const KNOWN_KEYS = new Set([
  'routing_strategy',
  'default_router',
  'routing_parameter',
  'timeout',
  'health_check',
  'logging',
  'local_deployment',
  'remote_deployment',
  'retry',
  'circuit_breaker',
  'health_check_timeout_ms',
  'stats_window',
  'state_sync_ms',
]);

type Reader = { key: string; read: (r: FieldReader, o: Record<string, unknown>, path: YamlPath) => number | undefined };

/**
 * Reads a mapping of numeric settings, refusing keys it does not know (a typo would otherwise
 * silently keep the default). Shared by routing.yaml and the per-route `retry:` of models.yaml.
 */
export function readSettings(r: FieldReader, raw: unknown, path: YamlPath, fields: readonly Reader[]): Record<string, number> | undefined {
  if (raw === undefined || raw === null) return undefined;
  const o = r.object(raw, path);
  if (!o) return undefined;
  const out: Record<string, number> = {};
  for (const f of fields) {
    const v = f.read(r, o, path);
    if (v !== undefined) out[f.key] = v;
  }
  for (const key of Object.keys(o)) {
    if (!fields.some((f) => f.key === key)) r.fail([...path, key], `unknown setting; use ${fields.map((f) => f.key).join(', ')}`);
  }
  return out;
}

const whole = (key: string, min: number) => ({
  key,
  read: (r: FieldReader, o: Record<string, unknown>, p: YamlPath) => r.number(o, key, p, { min, integer: true }),
});
const seconds = (key: string, min: number) => ({
  key,
  read: (r: FieldReader, o: Record<string, unknown>, p: YamlPath) => r.number(o, key, p, { min, max: MAX_TIMER_MS / 1000 }),
});

export const RETRY_FIELDS = [
  whole('max_retries', 0),
  whole('backoff_ms', 1),
  whole('max_backoff_ms', 1),
  whole('max_retry_after_ms', 0),
  whole('max_attempts', 1),
];
const CIRCUIT_FIELDS = [whole('failure_threshold', 1), seconds('cooldown_seconds', 0.001), whole('half_open_requests', 1)];
const WINDOW_FIELDS = [whole('size', 1), seconds('seconds', 0.001)];

/** `retry:` settings as a partial policy (routing.yaml fills in the defaults; a route overrides some). */
export function retryOverrides(s: Record<string, number> | undefined): Partial<RetryPolicy> {
  if (!s) return {};
  const out: { -readonly [K in keyof RetryPolicy]?: number } = {};
  if (s.max_retries !== undefined) out.maxRetries = s.max_retries;
  if (s.backoff_ms !== undefined) out.backoffMs = s.backoff_ms;
  if (s.max_backoff_ms !== undefined) out.maxBackoffMs = s.max_backoff_ms;
  if (s.max_retry_after_ms !== undefined) out.maxRetryAfterMs = s.max_retry_after_ms;
  if (s.max_attempts !== undefined) out.maxAttempts = s.max_attempts;
  return out;
}

export function parseRouting(src: YamlSource, warn: (msg: string) => void): RoutingDef {
  const r = new FieldReader(src);
  for (const u of src.unresolved) {
    // What is never read (an anchor's holder, an unknown key) is reported where an alias uses it.
    if (!KNOWN_KEYS.has(String(u.path[0]))) continue;
    // A deployment whose endpoint is unset is skipped below; anything else is an error.
    const isEndpoint = (u.path[0] === 'local_deployment' || u.path[0] === 'remote_deployment') && u.path[2] === 'endpoint';
    if (!isEndpoint) r.problems.push(src.describeUnresolved(u));
  }
  if (src.value === null || src.value === undefined) return { ...EMPTY_ROUTING, file: src.file };
  const root = r.object(src.value, []);
  if (!root) throw new ConfigError(r.problems);
  for (const key of Object.keys(root))
    if (!KNOWN_KEYS.has(key) && !key.startsWith('x-')) {
      const near = nearKeys(key, KNOWN_KEYS);
      warn(`${src.where([key])}: unknown key "${key}" ignored${near.length > 0 ? ` (${didYouMean(near)})` : ''}`);
    }

  const strategy = r.string(root, ['routing_strategy', 'default_router'], []) ?? DEFAULT_STRATEGY;
  const strategyKey = ['routing_strategy', 'default_router'].find((k) => root[k] !== undefined && root[k] !== null);
  let localFraction = EMPTY_ROUTING.localFraction;
  const param = root.routing_parameter;
  if (param !== undefined && param !== null) {
    const p = r.object(param, ['routing_parameter']);
    if (p) {
      localFraction = r.number(p, 'local_fraction', ['routing_parameter'], { min: 0, max: 1 }) ?? localFraction;
      for (const key of Object.keys(p))
        if (key !== 'local_fraction')
          warn(`${src.where(['routing_parameter', key])}: unknown key "${key}" ignored (routing_parameter takes local_fraction)`);
    }
  }
  const timeout = r.number(root, 'timeout', [], { min: 0.001, max: MAX_TIMER_MS / 1000 });
  let healthCheckSeconds = r.number(root, 'health_check', [], { min: 0, max: MAX_TIMER_MS / 1000 }) ?? 0;
  // Under a second the probes would be the endpoints' load (or round to 0 ms: off, unsaid).
  if (healthCheckSeconds > 0 && healthCheckSeconds < 1) {
    r.fail(['health_check'], `must be 0 (off) or at least 1 second, got ${healthCheckSeconds}`);
    healthCheckSeconds = 0;
  }

  const deployments = (key: 'local_deployment' | 'remote_deployment'): Deployment[] => {
    const list = root[key];
    if (list === undefined || list === null) return [];
    if (!Array.isArray(list)) {
      r.fail([key], 'must be a list of {endpoint, models}');
      return [];
    }
    const out: Deployment[] = [];
    list.forEach((item, i) => {
      const path: YamlPath = [key, i];
      const o = r.object(item, path);
      if (!o) return;
      const missing = src.unresolvedUnder([...path, 'endpoint']);
      if (missing.length > 0) {
        warn(`${src.where(path)}: skipped: ${missing.map((m) => m.variable).join(', ')} not set`);
        return;
      }
      const endpoint = r.string(o, 'endpoint', path, true);
      const models = r.stringList(o, 'models', path) ?? [];
      if (endpoint) out.push({ endpoint, models });
    });
    return out;
  };
  const localDeployments = deployments('local_deployment');
  const remoteDeployments = deployments('remote_deployment');
  const retry = { ...DEFAULT_RETRY, ...retryOverrides(readSettings(r, root.retry, ['retry'], RETRY_FIELDS)) };
  const cb = readSettings(r, root.circuit_breaker, ['circuit_breaker'], CIRCUIT_FIELDS) ?? {};
  const circuitBreaker: CircuitPolicy = {
    failureThreshold: cb.failure_threshold ?? DEFAULT_CIRCUIT.failureThreshold,
    cooldownMs: cb.cooldown_seconds !== undefined ? Math.round(cb.cooldown_seconds * 1000) : DEFAULT_CIRCUIT.cooldownMs,
    halfOpenRequests: cb.half_open_requests ?? DEFAULT_CIRCUIT.halfOpenRequests,
  };
  const win = readSettings(r, root.stats_window, ['stats_window'], WINDOW_FIELDS) ?? {};
  const statsWindow: StatsWindowDef = { size: win.size ?? DEFAULT_STATS_WINDOW.size, seconds: win.seconds ?? DEFAULT_STATS_WINDOW.seconds };
  const healthCheckTimeoutMs =
    r.number(root, 'health_check_timeout_ms', [], { min: 1, integer: true }) ?? EMPTY_ROUTING.healthCheckTimeoutMs;
  const stateSyncMs = r.number(root, 'state_sync_ms', [], { min: 10, integer: true }) ?? EMPTY_ROUTING.stateSyncMs;
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return {
    strategy,
    strategyWhere: strategyKey ? src.where([strategyKey]) : undefined,
    localFraction,
    totalTimeoutMs: timeout === undefined ? undefined : Math.round(timeout * 1000),
    healthCheckSeconds,
    localDeployments,
    remoteDeployments,
    file: src.file,
    retry,
    circuitBreaker,
    healthCheckTimeoutMs,
    statsWindow,
    stateSyncMs,
  };
}

/** Compares endpoints loosely: scheme and host case, trailing slashes and a trailing /v1 do not matter. */
export function sameEndpoint(a: string, b: string): boolean {
  return normaliseEndpoint(a) === normaliseEndpoint(b);
}

export function normaliseEndpoint(url: string): string {
  let u = url.trim().replace(/\/+$/, '');
  u = u.replace(/\/v1$/, '');
  try {
    const parsed = new URL(u);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname.replace(/\/+$/, '')}`.toLowerCase();
  } catch {
    return u.toLowerCase();
  }
}
