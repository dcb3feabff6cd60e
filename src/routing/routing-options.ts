import { PROVIDER_POLICY_KEYS, type ChatRequest } from '../common/chat.types';
import { InvalidRequestError } from '../common/errors';
import { perMillionToPicoPerToken, usdToPico } from '../common/money';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { routingVariant, type RoutingVariant } from '../config/model-registry.service';
import { pricingOf } from './cost-estimate';
import { isJsonObject } from '../common/json-object';

export type ProviderSort = 'price' | 'throughput' | 'latency';

/** Upper bounds on a route's prices, in pico-dollars per token (prompt, completion) or per unit. */
export interface MaxPrice {
  prompt?: bigint;
  completion?: bigint;
  request?: bigint;
  image?: bigint;
}

/**
 * OpenRouter's request options, validated: `models` (fallback models, in order), `provider`
 * preferences, and the `:nitro` / `:floor` suffixes of the model id.
 */
export interface RoutingOptions {
  /** Models to try, in order, after the requested one (from `models`). */
  readonly fallbacks: readonly ModelDef[];
  readonly order?: readonly string[];
  readonly only?: readonly string[];
  readonly ignore?: readonly string[];
  /** false: no route beyond the first (or beyond those in `order`). */
  readonly allowFallbacks: boolean;
  /** Replaces the strategy's order (no load balancing), from `provider.sort` or a suffix. */
  readonly sort?: ProviderSort;
  readonly maxPrice?: MaxPrice;
}

export const NO_OPTIONS: RoutingOptions = { fallbacks: [], allowFallbacks: true };

/** What option parsing needs from the registry. */
export interface OptionContext {
  /** A model by id, alias or with a routing variant (`id:nitro`), as RegistrySnapshot.find. */
  find(name: string): ModelDef | undefined;
}

export const MAX_FALLBACK_MODELS = 10;
const SORTS: readonly ProviderSort[] = ['price', 'throughput', 'latency'];
/**
 * What each routing variant sorts by. `:exacto` is OpenRouter's quality-first order among its
 * providers; a gateway's routes are its operator's choice, so it keeps the strategy's order.
 */
const VARIANTS: Readonly<Record<RoutingVariant, ProviderSort | undefined>> = { nitro: 'throughput', floor: 'price', exacto: undefined };
const PRICE_KEYS = ['prompt', 'completion', 'request', 'image'] as const;
const QUANTIZATIONS = ['int4', 'int8', 'fp4', 'fp6', 'fp8', 'fp16', 'bf16', 'fp32', 'unknown'];
/**
 * OpenRouter provider preferences the gateway acts on, and those it accepts without effect
 * because its routes carry no such information (data policies, quantisation, throughput
 * targets): refusing them would break clients written for OpenRouter.
 */
const PROVIDER_KEYS = ['order', 'only', 'ignore', 'allow_fallbacks', 'sort', 'max_price', 'require_parameters', ...PROVIDER_POLICY_KEYS];

function bad(param: string, problem: string): never {
  throw new InvalidRequestError(`Invalid request: "${param}" ${problem}`, param, 'invalid_request');
}

/** `name:nitro` / `name:floor`: the model name and the sort its suffix asks for. */
export function splitVariant(name: string): { base: string; sort?: ProviderSort } | undefined {
  const v = routingVariant(name);
  return v && { base: v.base, sort: VARIANTS[v.variant] };
}

/** Whether a provider name in `order` / `only` / `ignore` means this route: its id, its kind, or the bracketed part of its kind. */
export function routeMatches(route: RouteDef, slug: string): boolean {
  const s = slug.toLowerCase();
  return route.id.toLowerCase() === s || route.kind === s || route.kindArg?.toLowerCase() === s;
}

/**
 * Reads and checks the routing options of a request for `primary` (the model it resolved to).
 * Anything malformed or unknown is a 400 naming the parameter. Requests without options take
 * the fast path and allocate nothing.
 */
export function parseRoutingOptions(req: ChatRequest, primary: ModelDef, ctx: OptionContext): RoutingOptions {
  const variant = req.model !== primary.id && !primary.aliases.includes(req.model) ? splitVariant(req.model) : undefined;
  if ((req.models === undefined || req.models === null) && (req.provider === undefined || req.provider === null) && !variant)
    return NO_OPTIONS;

  const fallbacks = parseModels(req.models, primary, ctx);
  const p = req.provider;
  if (p === undefined || p === null) return { fallbacks, allowFallbacks: true, sort: variant?.sort };
  if (!isJsonObject(p)) bad('provider', 'must be an object');
  for (const key of Object.keys(p)) {
    if (!PROVIDER_KEYS.includes(key)) bad(`provider.${key}`, `is not a provider preference; known: ${PROVIDER_KEYS.join(', ')}`);
  }
  const slugs = (key: 'order' | 'only' | 'ignore'): string[] | undefined => {
    const v = p[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) bad(`provider.${key}`, 'must be an array of provider names');
    return v.map((s: unknown, i: number) => {
      // A name no route answers to matches nothing, as on OpenRouter: clients set their
      // preferences once for every gateway (`ignore: [deepinfra]`); `only` with no match leaves
      // no route, which is the no-matching-route answer.
      if (typeof s !== 'string' || s.trim() === '') bad(`provider.${key}[${i}]`, 'must be a non-empty string');
      return s;
    });
  };
  const flag = (key: string): boolean | undefined => {
    const v = p[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') bad(`provider.${key}`, 'must be a boolean');
    return v;
  };
  flag('require_parameters');
  flag('zdr');
  flag('enforce_distillable_text');
  if (p.data_collection !== undefined && p.data_collection !== null && p.data_collection !== 'allow' && p.data_collection !== 'deny') {
    bad('provider.data_collection', 'must be "allow" or "deny"');
  }
  if (p.quantizations !== undefined && p.quantizations !== null) {
    if (!Array.isArray(p.quantizations)) bad('provider.quantizations', 'must be an array');
    p.quantizations.forEach((q: unknown, i: number) => {
      if (typeof q !== 'string' || !QUANTIZATIONS.includes(q))
        bad(`provider.quantizations[${i}]`, `must be one of ${QUANTIZATIONS.join(', ')}`);
    });
  }
  for (const key of ['preferred_min_throughput', 'preferred_max_latency']) checkPerformanceTarget(p[key], `provider.${key}`);

  return {
    fallbacks,
    order: slugs('order'),
    only: slugs('only'),
    ignore: slugs('ignore'),
    allowFallbacks: flag('allow_fallbacks') ?? true,
    sort: parseSort(p.sort) ?? variant?.sort,
    maxPrice: parseMaxPrice(p.max_price),
  };
}

function parseModels(raw: unknown, primary: ModelDef, ctx: OptionContext): ModelDef[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) bad('models', 'must be an array of model ids');
  if (raw.length > MAX_FALLBACK_MODELS) bad('models', `may list at most ${MAX_FALLBACK_MODELS} models`);
  const out: ModelDef[] = [];
  raw.forEach((name: unknown, i: number) => {
    if (typeof name !== 'string' || name.trim() === '') bad(`models[${i}]`, 'must be a non-empty string');
    // The registry's lookup takes a routing variant (`id:nitro`) as its model.
    const model = ctx.find(name);
    if (!model) bad(`models[${i}]`, `names a model this gateway does not serve ("${name}"); GET /v1/models lists the models`);
    if (model.type !== primary.type)
      bad(`models[${i}]`, `"${model.id}" is an ${model.type} model; it cannot stand in for the ${primary.type} model "${primary.id}"`);
    if (model !== primary && !out.includes(model)) out.push(model);
  });
  return out;
}

function parseSort(v: unknown): ProviderSort | undefined {
  if (v === undefined || v === null) return undefined;
  const by = isJsonObject(v) ? v.by : v;
  const param = isJsonObject(v) ? 'provider.sort.by' : 'provider.sort';
  if (typeof by !== 'string' || !SORTS.includes(by as ProviderSort)) bad(param, `must be one of ${SORTS.join(', ')}`);
  if (isJsonObject(v)) {
    for (const key of Object.keys(v))
      if (key !== 'by' && key !== 'partition') bad(`provider.sort.${key}`, 'is not a sort option; known: by, partition');
    if (v.partition !== undefined && v.partition !== null && v.partition !== 'model' && v.partition !== 'none')
      bad('provider.sort.partition', 'must be "model" or "none"');
  }
  return by as ProviderSort;
}

function parseMaxPrice(v: unknown): MaxPrice | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isJsonObject(v)) bad('provider.max_price', 'must be an object of prices (USD per million tokens; request and image per unit)');
  const out: MaxPrice = {};
  for (const [key, raw] of Object.entries(v)) {
    if (!(PRICE_KEYS as readonly string[]).includes(key))
      bad(`provider.max_price.${key}`, `is not a price; known: ${PRICE_KEYS.join(', ')}`);
    if (raw === null || raw === undefined) continue;
    if ((typeof raw !== 'number' && typeof raw !== 'string') || (typeof raw === 'number' && !(raw >= 0)))
      bad(`provider.max_price.${key}`, 'must be a non-negative number');
    try {
      const k = key as (typeof PRICE_KEYS)[number];
      out[k] = k === 'request' || k === 'image' ? usdToPico(raw) : perMillionToPicoPerToken(raw);
    } catch {
      bad(`provider.max_price.${key}`, 'must be a non-negative number');
    }
  }
  return out;
}

function checkPerformanceTarget(v: unknown, param: string): void {
  if (v === undefined || v === null) return;
  if (typeof v === 'number' && v >= 0) return;
  if (isJsonObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (!['p50', 'p75', 'p90', 'p99'].includes(k)) bad(`${param}.${k}`, 'must be one of p50, p75, p90, p99');
      if (x !== null && !(typeof x === 'number' && x >= 0)) bad(`${param}.${k}`, 'must be a non-negative number');
    }
    return;
  }
  bad(param, 'must be a non-negative number or {p50, p75, p90, p99}');
}

/** The routes of `model` that `only`, `ignore` and `max_price` allow, in listed order. */
export function allowedRoutes(model: ModelDef, routes: readonly RouteDef[], opts: RoutingOptions): readonly RouteDef[] {
  if (!opts.only && !opts.ignore && !opts.maxPrice) return routes;
  return routes.filter((r) => {
    if (opts.only && !opts.only.some((s) => routeMatches(r, s))) return false;
    if (opts.ignore?.some((s) => routeMatches(r, s))) return false;
    if (opts.maxPrice) {
      const price = pricingOf(model, r);
      for (const key of PRICE_KEYS) {
        const limit = opts.maxPrice[key];
        if (limit !== undefined && price[key].pico > limit) return false;
      }
    }
    return true;
  });
}

/**
 * `order`: the routes it names first, in its order; then, if fallbacks are allowed, the others in
 * the strategy's order. Without `order`, `allow_fallbacks: false` keeps only the first route.
 */
export function applyOrder(planned: readonly RouteDef[], opts: RoutingOptions): RouteDef[] {
  if (!opts.order) return opts.allowFallbacks ? [...planned] : planned.slice(0, 1);
  const first: RouteDef[] = [];
  for (const slug of opts.order) for (const r of planned) if (routeMatches(r, slug) && !first.includes(r)) first.push(r);
  return opts.allowFallbacks ? [...first, ...planned.filter((r) => !first.includes(r))] : first;
}
