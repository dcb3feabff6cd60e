import { parseDateUtc } from '../common/timestamp';
import { MAX_TIMER_MS } from '../common/deadline';
import { FREE, finerThan, PER_MILLION_SCALE, PICO_SCALE, tokenPrice, unitPrice, type Price, type Pricing } from '../common/money';
import type { UpstreamTimeouts } from './app-config';
import { FieldReader, withoutUrlCredentials } from './field-reader';
import type { Architecture, Locality, ModelDef, RouteDef, RoutingDef } from './registry.types';
import { sameEndpoint } from './routing.parser';
import { ConfigError, type YamlPath, type YamlSource } from './yaml-source';

/** Keys a model may carry; the seeds' spellings are accepted next to OpenRouter's. */
const MODEL_KEYS = new Set([
  'id',
  'name',
  'description',
  'created',
  'type',
  'provider',
  'quantization',
  'context_length',
  'max_output_length',
  'max_completion_tokens',
  'architecture',
  'input_modalities',
  'output_modalities',
  'modality',
  'tokenizer',
  'instruct_type',
  'supports_tools',
  'supports_structured_output',
  'supports_reasoning',
  'supported_params',
  'supported_parameters',
  'aliases',
  'pricing',
  'router',
  'router_params',
  'required_role',
  'provider_model_id',
  'route',
  'routes',
  'is_moderated',
  'hugging_face_id',
  'canonical_slug',
]);

/** Route keys the gateway itself reads; every other key is handed to the adapter as an option. */
export const ROUTE_KEYS: ReadonlySet<string> = new Set([
  'id',
  'name',
  'kind',
  'weight',
  'base_url',
  'api_key',
  'api_keys',
  'provider_model_id',
  'optional',
  'local',
  'locality',
  'headers',
  'extra_body',
  'timeouts',
  'timeout',
  'pricing',
]);

const PRICE_KEYS: Record<string, readonly string[]> = {
  prompt: ['prompt'],
  completion: ['completion'],
  request: ['request'],
  image: ['image'],
  input_cache_read: ['input_cache_read', 'input_cache_reads'],
  input_cache_write: ['input_cache_write', 'input_cache_writes'],
  input_cache_write_1h: ['input_cache_write_1h'],
  internal_reasoning: ['internal_reasoning'],
  web_search: ['web_search'],
};
const KNOWN_PRICE_KEYS = new Set(Object.values(PRICE_KEYS).flat());

const KIND = /^([A-Za-z0-9_.-]+)(?:\[([^\]]+)\])?$/;

/** What `/v1/embeddings` takes besides model and input. */
const EMBEDDING_PARAMETERS = ['dimensions', 'encoding_format', 'user'];

const BASE_PARAMETERS = [
  'max_tokens',
  'temperature',
  'top_p',
  'stop',
  'frequency_penalty',
  'presence_penalty',
  'seed',
  'logit_bias',
  'logprobs',
  'top_logprobs',
];

export interface ParseModelsOptions {
  routing: RoutingDef;
  /** `created` for models that do not set one (unix seconds). */
  defaultCreated: number;
  /** Something is probably wrong (an unknown key, a model left without routes). */
  warn: (msg: string) => void;
  /** Something worth knowing that the config asked for (an optional route skipped). Default: warn. */
  notice?: (msg: string) => void;
}

export function parseModels(src: YamlSource, opts: ParseModelsOptions): ModelDef[] {
  const r = new FieldReader(src);
  const root = src.value === null || src.value === undefined ? {} : r.object(src.value, []);
  if (!root) throw new ConfigError(r.problems);
  const list = root.models ?? [];
  if (!Array.isArray(list)) throw new ConfigError([`${src.where(['models'])}: must be a list of models`]);
  // Other top-level keys hold anchors for the models to use (`x-defaults: &defaults {...}`);
  // one that is not named so is most likely a misspelt `models`.
  for (const key of Object.keys(root))
    if (key !== 'models' && !key.startsWith('x-'))
      opts.warn(`${src.where([key])}: unknown top-level key "${key}" ignored (name a key that holds anchors x-...)`);

  const skippedRoutes: YamlPath[] = [];
  const models: ModelDef[] = [];
  const seen = new Map<string, string>();
  list.forEach((item, i) => {
    const model = parseModel(r, item, ['models', i], opts, skippedRoutes);
    if (!model) return;
    for (const name of [model.id, ...model.aliases]) {
      const other = seen.get(name);
      if (other) r.fail(['models', i], `model id or alias "${name}" is already used at ${other}`);
      else seen.set(name, model.where);
    }
    models.push(model);
  });

  for (const u of src.unresolved) {
    // What is never read (an anchor's holder) is reported where an alias uses it, if anywhere.
    if (u.path[0] !== 'models') continue;
    const inSkipped = skippedRoutes.some((p) => p.every((part, k) => u.path[k] === part));
    if (!inSkipped) r.problems.push(src.describeUnresolved(u));
  }
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return models;
}

function parseModel(
  r: FieldReader,
  item: unknown,
  path: YamlPath,
  opts: ParseModelsOptions,
  skippedRoutes: YamlPath[],
): ModelDef | undefined {
  const o = r.object(item, path);
  if (!o) return undefined;
  const id = r.string(o, 'id', path, true);
  if (!id) return undefined;
  for (const key of Object.keys(o)) {
    if (!MODEL_KEYS.has(key)) opts.warn(`${r.src.where([...path, key])}: unknown model key "${key}" ignored`);
  }
  const type = r.string(o, 'type', path) ?? 'chat';
  if (type !== 'chat' && type !== 'embedding') r.fail([...path, 'type'], `must be chat or embedding, got "${type}"`);
  const contextLength = r.number(o, 'context_length', path, { min: 1, integer: true });
  // Left empty (`context_length:`) is not given either.
  if (contextLength === undefined && (o.context_length === undefined || o.context_length === null))
    r.fail([...path, 'context_length'], 'is required');
  const maxCompletion = r.number(o, ['max_completion_tokens', 'max_output_length'], path, { min: 0, integer: true });
  const pricing = parsePricing(r, o.pricing, [...path, 'pricing'], opts.warn) ?? {
    prompt: FREE,
    completion: FREE,
    request: FREE,
    image: FREE,
  };
  const createdRaw = o.created;
  let created = opts.defaultCreated;
  if (typeof createdRaw === 'number') created = Math.trunc(createdRaw);
  else if (typeof createdRaw === 'string') {
    const t = /^\d+$/.test(createdRaw) ? Number(createdRaw) * 1000 : parseDateUtc(createdRaw);
    if (Number.isNaN(t)) r.fail([...path, 'created'], 'must be unix seconds or a date');
    else created = Math.trunc(t / 1000);
  }
  const supportsTools = r.boolean(o, 'supports_tools', path) ?? true;
  const supportsStructured = r.boolean(o, 'supports_structured_output', path) ?? false;
  const supported =
    r.stringList(o, ['supported_parameters', 'supported_params'], path) ??
    (type === 'embedding'
      ? EMBEDDING_PARAMETERS
      : [
          ...BASE_PARAMETERS,
          ...(supportsTools ? ['tools', 'tool_choice', 'parallel_tool_calls'] : []),
          ...(supportsStructured ? ['response_format', 'structured_outputs'] : ['response_format']),
        ]);
  const defaultProviderModelId = r.string(o, 'provider_model_id', path) ?? id;

  const routesKey = o.routes !== undefined ? 'routes' : 'route';
  const rawRoutes = o[routesKey];
  const routes: RouteDef[] = [];
  if (!Array.isArray(rawRoutes) || rawRoutes.length === 0) {
    r.fail([...path, routesKey], 'must be a non-empty list of routes ({kind, base_url, ...})');
  } else {
    const ids = new Set<string>();
    rawRoutes.forEach((raw, j) => {
      const rpath: YamlPath = [...path, routesKey, j];
      const route = parseRoute(r, raw, rpath, {
        modelId: id,
        defaultProviderModelId,
        routing: opts.routing,
        pricing,
        warn: opts.warn,
        notice: opts.notice ?? opts.warn,
        skippedRoutes,
      });
      if (!route) return;
      // Ids given in the file name their route everywhere (provider.order, api_logs.endpoint,
      // /admin/routing): the same one twice would be ambiguous, not numbered as defaults are.
      // So is one a default took already (numbered: vllm-2), and a number.
      const o = raw as { id?: unknown; name?: unknown } | null;
      const key = o?.id !== undefined && o.id !== null ? 'id' : o?.name !== undefined && o.name !== null ? 'name' : undefined;
      if (key && ids.has(route.id))
        return r.fail([...rpath, key], `"${route.id}" is the id of another route of this model already; route ids must differ`);
      let routeId = route.id;
      for (let n = 2; ids.has(routeId); n++) routeId = `${route.id}-${n}`;
      ids.add(routeId);
      routes.push(routeId === route.id ? route : { ...route, id: routeId });
    });
    if (routes.length === 0 && rawRoutes.length > 0 && skippedRoutes.some((p) => p[1] === path[1])) {
      opts.warn(`${r.src.where(path)}: model "${id}" has no usable route (every optional route was skipped); it is not served`);
      return undefined;
    }
  }

  return {
    id,
    name: r.string(o, 'name', path) ?? id,
    canonicalSlug: r.string(o, 'canonical_slug', path) ?? id,
    huggingFaceId: r.string(o, 'hugging_face_id', path) ?? null,
    description: r.string(o, 'description', path) ?? '',
    created,
    type: type === 'embedding' ? 'embedding' : 'chat',
    contextLength: contextLength ?? 0,
    maxCompletionTokens: maxCompletion ?? null,
    architecture: parseArchitecture(r, o, path, type === 'embedding'),
    pricing,
    supportedParameters: supported,
    isModerated: r.boolean(o, 'is_moderated', path) ?? false,
    aliases: r.stringList(o, 'aliases', path) ?? [],
    router: r.string(o, 'router', path),
    routerWhere: o.router === undefined || o.router === null ? undefined : r.src.where([...path, 'router']),
    routerParams: o.router_params == null ? {} : (r.object(o.router_params, [...path, 'router_params']) ?? {}),
    routes,
    where: r.src.where(path),
  };
}

function parseArchitecture(r: FieldReader, o: Record<string, unknown>, path: YamlPath, embedding: boolean): Architecture {
  const arch = r.isObject(o.architecture) ? o.architecture : {};
  const apath = r.isObject(o.architecture) ? [...path, 'architecture'] : path;
  const input = r.stringList(arch, 'input_modalities', apath) ?? r.stringList(o, 'input_modalities', path) ?? ['text'];
  const output = r.stringList(arch, 'output_modalities', apath) ??
    r.stringList(o, 'output_modalities', path) ?? [embedding ? 'embeddings' : 'text'];
  return {
    modality: r.string(arch, 'modality', apath) ?? r.string(o, 'modality', path) ?? `${input.join('+')}->${output.join('+')}`,
    input_modalities: input,
    output_modalities: output,
    tokenizer: r.string(arch, 'tokenizer', apath) ?? r.string(o, 'tokenizer', path) ?? 'Other',
    instruct_type: r.string(arch, 'instruct_type', apath) ?? r.string(o, 'instruct_type', path) ?? null,
  };
}

/**
 * A `pricing` block. With both token prices it is a whole price list: what it leaves out is free.
 * With only some, a price it leaves out is `base`'s (a route's block over its model's: a route
 * that writes only its prompt price keeps the model's completion and request prices); the cache
 * prices follow the prompt price, the reasoning price the completion price.
 */
export function parsePricing(r: FieldReader, raw: unknown, path: YamlPath, warn: (m: string) => void, base?: Pricing): Pricing | undefined {
  if (raw === undefined || raw === null) return undefined;
  const o = r.object(raw, path);
  if (!o) return undefined;
  for (const key of Object.keys(o)) {
    if (!KNOWN_PRICE_KEYS.has(key)) warn(`${r.src.where([...path, key])}: unknown price "${key}" ignored`);
  }
  const read = (name: keyof typeof PRICE_KEYS, unit: boolean): Price | undefined => {
    const [key, v] = r.pick(o, PRICE_KEYS[name]);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' && typeof v !== 'number') {
      r.fail([...path, key], 'must be a price (a number or a numeric string)');
      return undefined;
    }
    try {
      const price = unit ? unitPrice(v) : tokenPrice(v);
      // Costs are counted in whole pico-dollars per token (per unit): a finer price is billed
      // rounded, and /v1/models shows it so; say so rather than bill a price nobody wrote.
      if (finerThan(v, unit ? PICO_SCALE : PER_MILLION_SCALE))
        warn(
          `${r.src.where([...path, key])}: ${v} is finer than the gateway counts (${unit ? '1e-12 USD' : '1e-6 USD per million tokens, a pico-dollar a token'}); billed as ${price.text}`,
        );
      return price;
    } catch (err) {
      r.fail([...path, key], (err as Error).message);
      return undefined;
    }
  };
  const prompt = read('prompt', false);
  const completion = read('completion', false);
  // A block with both token prices is a whole price list (a route's: `{prompt: 0, completion: 0}`
  // is a free route); one with only some prices changes those, the rest staying the model's.
  if (prompt && completion) base = undefined;
  const pricing: Pricing = {
    prompt: prompt ?? base?.prompt ?? FREE,
    completion: completion ?? base?.completion ?? FREE,
    request: read('request', true) ?? base?.request ?? FREE,
    image: read('image', true) ?? base?.image ?? FREE,
  };
  // The cache prices go with the prompt price, the reasoning price with the completion price:
  // a route with a prompt price of its own (a free local one: 0) does not keep the model's.
  const cacheBase = prompt ? undefined : base;
  const cacheRead = read('input_cache_read', false) ?? cacheBase?.input_cache_read;
  const cacheWrite = read('input_cache_write', false) ?? cacheBase?.input_cache_write;
  const cacheWrite1h = read('input_cache_write_1h', false) ?? cacheBase?.input_cache_write_1h;
  const reasoning = read('internal_reasoning', false) ?? (completion ? undefined : base?.internal_reasoning);
  if (cacheRead) pricing.input_cache_read = cacheRead;
  if (cacheWrite) pricing.input_cache_write = cacheWrite;
  if (cacheWrite1h) pricing.input_cache_write_1h = cacheWrite1h;
  if (reasoning) pricing.internal_reasoning = reasoning;
  const search = read('web_search', true) ?? base?.web_search;
  if (search) pricing.web_search = search;
  return pricing;
}

interface RouteContext {
  modelId: string;
  /** The model's prices, which a route's `pricing` block overrides key by key. */
  pricing: Pricing;
  defaultProviderModelId: string;
  routing: RoutingDef;
  warn: (m: string) => void;
  notice: (m: string) => void;
  skippedRoutes: YamlPath[];
}

function parseRoute(r: FieldReader, raw: unknown, path: YamlPath, ctx: RouteContext): RouteDef | undefined {
  const o = r.object(raw, path);
  if (!o) return undefined;
  const optional = r.boolean(o, 'optional', path) ?? false;
  if (optional) {
    // Skipped when a variable it references without a default is unset or blank (an explicit
    // `${KEY:-}` says blank is fine), or when its base_url comes out blank.
    const missing = r.src.unresolvedUnder(path);
    const blank = r.src.blanksUnder(path);
    const blankUrl = typeof o.base_url === 'string' && o.base_url.trim() === '';
    if (missing.length > 0 || blank.length > 0 || blankUrl) {
      const names = (list: typeof missing) => [...new Set(list.map((m) => m.variable))].join(', ');
      const why = missing.length > 0 ? `${names(missing)} not set` : blank.length > 0 ? `${names(blank)} is blank` : 'base_url is blank';
      ctx.notice(`${r.src.where(path)}: optional route skipped: ${why}`);
      ctx.skippedRoutes.push(path);
      return undefined;
    }
  }
  const kindText = r.string(o, 'kind', path, true);
  if (!kindText) return undefined;
  const km = KIND.exec(kindText.trim());
  if (!km) {
    r.fail([...path, 'kind'], `"${kindText}" is not a route kind (write e.g. openai_compat, vllm, openrouter[deepinfra])`);
    return undefined;
  }
  const kind = km[1].toLowerCase();
  const baseUrl = r.string(o, 'base_url', path)?.trim();
  if (baseUrl) {
    try {
      const u = new URL(baseUrl);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      r.fail([...path, 'base_url'], `"${withoutUrlCredentials(baseUrl)}" is not an http(s) URL`);
    }
  }
  const apiKeys = [
    ...(r.string(o, 'api_key', path) !== undefined ? [String(o.api_key)] : []),
    ...(r.stringList(o, 'api_keys', path) ?? []),
  ].filter((k) => k.trim() !== '');
  const weight = r.number(o, 'weight', path, { min: 0 }) ?? 1;
  const providerModelId = r.string(o, 'provider_model_id', path) ?? ctx.defaultProviderModelId;

  let locality: Locality | undefined;
  const localFlag = r.boolean(o, 'local', path);
  if (localFlag !== undefined) locality = localFlag ? 'local' : 'remote';
  const localityText = r.string(o, 'locality', path);
  if (localityText !== undefined) {
    if (localityText !== 'local' && localityText !== 'remote') r.fail([...path, 'locality'], 'must be local or remote');
    else locality = localityText;
  }
  locality ??= deploymentLocality(ctx.routing, baseUrl, ctx.modelId, providerModelId) ?? 'remote';

  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(o)) if (!ROUTE_KEYS.has(key)) options[key] = value;
  const extraBody = o.extra_body === undefined ? undefined : r.object(o.extra_body, [...path, 'extra_body']);
  const routePricing = parsePricing(r, o.pricing, [...path, 'pricing'], ctx.warn, ctx.pricing);

  return {
    id: r.string(o, ['id', 'name'], path) ?? kindText.replace(/[[\]]/g, (c) => (c === '[' ? ':' : '')),
    kind,
    kindArg: km[2],
    baseUrl: baseUrl || undefined,
    apiKeys,
    providerModelId,
    weight,
    locality,
    headers: r.stringMap(o, 'headers', path) ?? {},
    extraBody,
    timeouts: parseRouteTimeouts(r, o, path),
    pricing: routePricing,
    options,
    where: r.src.where(path),
  };
}

function parseRouteTimeouts(r: FieldReader, o: Record<string, unknown>, path: YamlPath): Partial<UpstreamTimeouts> {
  const out: Partial<UpstreamTimeouts> = {};
  const seconds = r.number(o, 'timeout', path, { min: 0.001, max: MAX_TIMER_MS / 1000 });
  if (seconds !== undefined) out.totalMs = Math.round(seconds * 1000);
  if (o.timeouts === undefined || o.timeouts === null) return out;
  const t = r.object(o.timeouts, [...path, 'timeouts']);
  if (!t) return out;
  const tpath = [...path, 'timeouts'];
  const ms = (key: string) => r.number(t, key, tpath, { min: 1, integer: true });
  const fields: Array<[keyof UpstreamTimeouts, string]> = [
    ['connectMs', 'connect_ms'],
    ['firstByteMs', 'first_byte_ms'],
    ['firstTokenMs', 'first_token_ms'],
    ['idleMs', 'idle_ms'],
    ['totalMs', 'total_ms'],
  ];
  for (const [field, key] of fields) {
    const v = ms(key);
    if (v !== undefined) out[field] = v;
  }
  for (const key of Object.keys(t)) {
    if (!fields.some(([, k]) => k === key)) r.fail([...tpath, key], `unknown timeout; use ${fields.map(([, k]) => k).join(', ')}`);
  }
  return out;
}

/** A route is local or remote when routing.yaml lists its endpoint (and, if given, its model). */
function deploymentLocality(
  routing: RoutingDef,
  baseUrl: string | undefined,
  modelId: string,
  providerModelId: string,
): Locality | undefined {
  if (!baseUrl) return undefined;
  const matches = (d: { endpoint: string; models: readonly string[] }) =>
    sameEndpoint(d.endpoint, baseUrl) && (d.models.length === 0 || d.models.includes(modelId) || d.models.includes(providerModelId));
  if (routing.localDeployments.some(matches)) return 'local';
  if (routing.remoteDeployments.some(matches)) return 'remote';
  return undefined;
}
