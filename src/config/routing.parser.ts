import { FieldReader } from './field-reader';
import type { Deployment, RoutingDef } from './registry.types';
import { ConfigError, type YamlPath, type YamlSource } from './yaml-source';

export const DEFAULT_STRATEGY = 'weighted';

/** routing.yaml is optional: without it every model uses its own `router:` or weighted choice. */
export const EMPTY_ROUTING: RoutingDef = {
  strategy: DEFAULT_STRATEGY,
  localFraction: 0.5,
  healthCheckSeconds: 0,
  localDeployments: [],
  remoteDeployments: [],
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
]);

export function parseRouting(src: YamlSource, warn: (msg: string) => void): RoutingDef {
  const r = new FieldReader(src);
  for (const u of src.unresolved) {
    // A deployment whose endpoint is unset is skipped below; anything else is an error.
    const isEndpoint = (u.path[0] === 'local_deployment' || u.path[0] === 'remote_deployment') && u.path[2] === 'endpoint';
    if (!isEndpoint) r.problems.push(src.describeUnresolved(u));
  }
  if (src.value === null || src.value === undefined) return { ...EMPTY_ROUTING, file: src.file };
  const root = r.object(src.value, []);
  if (!root) throw new ConfigError(r.problems);
  for (const key of Object.keys(root)) if (!KNOWN_KEYS.has(key)) warn(`${src.where([key])}: unknown key "${key}" ignored`);

  const strategy = r.string(root, ['routing_strategy', 'default_router'], []) ?? DEFAULT_STRATEGY;
  let localFraction = EMPTY_ROUTING.localFraction;
  const param = root.routing_parameter;
  if (param !== undefined && param !== null) {
    const p = r.object(param, ['routing_parameter']);
    if (p) localFraction = r.number(p, 'local_fraction', ['routing_parameter'], { min: 0, max: 1 }) ?? localFraction;
  }
  const timeout = r.number(root, 'timeout', [], { min: 0.001 });
  const healthCheckSeconds = r.number(root, 'health_check', [], { min: 0 }) ?? 0;

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
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return {
    strategy,
    localFraction,
    totalTimeoutMs: timeout === undefined ? undefined : Math.round(timeout * 1000),
    healthCheckSeconds,
    localDeployments,
    remoteDeployments,
    file: src.file,
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
