import type { ChatRequest } from '../common/chat.types';
import { InvalidRequestError } from '../common/errors';
import { FREE, tokenPrice, unitPrice } from '../common/money';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { allowedRoutes, applyOrder, NO_OPTIONS, parseRoutingOptions, splitVariant, type OptionContext } from './routing-options';

const route = (id: string, kind: string, prompt = '1', kindArg?: string): RouteDef => ({
  id,
  kind,
  kindArg,
  apiKeys: [],
  providerModelId: id,
  weight: 1,
  locality: 'remote',
  headers: {},
  timeouts: {},
  options: {},
  where: 'x',
  pricing: { prompt: tokenPrice(prompt), completion: tokenPrice('1'), request: unitPrice('0'), image: FREE },
});
const model = (id: string, routes: RouteDef[], aliases: string[] = [], type = 'chat') =>
  ({ id, aliases, routes, type }) as unknown as ModelDef;

const a = model('acme/a', [
  route('gpu-1', 'vllm', '0.1'),
  route('deepseek-api', 'deepseek', '2'),
  route('or', 'openrouter', '1', 'together'),
]);
const b = model('acme/b', [route('gpu-2', 'vllm')]);
const e = model('acme/embed', [route('gpu-3', 'vllm')], [], 'embedding');
const ctx: OptionContext = {
  find: (name) => [a, b, e].find((m) => m.id === name),
};
const req = (extra: Record<string, unknown>): ChatRequest => ({ model: 'acme/a', messages: [{ role: 'user', content: 'x' }], ...extra });
const parse = (extra: Record<string, unknown>) => parseRoutingOptions(req(extra), a, ctx);

function rejects(extra: Record<string, unknown>): InvalidRequestError {
  try {
    parse(extra);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect((err as InvalidRequestError).status).toBe(400);
    return err as InvalidRequestError;
  }
  throw new Error('expected a 400');
}

describe('parseRoutingOptions', () => {
  it('takes the fast path (the shared constant) when there are no options', () => {
    expect(parse({})).toBe(NO_OPTIONS);
    expect(parse({ models: null, provider: null })).toBe(NO_OPTIONS);
  });

  it('resolves fallback models in order, without the primary or duplicates', () => {
    expect(parse({ models: ['acme/a', 'acme/b', 'acme/b'] }).fallbacks.map((m) => m.id)).toEqual(['acme/b']);
  });

  it('reads provider preferences', () => {
    const o = parse({
      provider: {
        order: ['deepseek', 'gpu-1'],
        ignore: ['together'],
        allow_fallbacks: false,
        sort: 'latency',
        max_price: { prompt: 1, completion: '2.5' },
      },
    });
    expect(o).toMatchObject({ order: ['deepseek', 'gpu-1'], ignore: ['together'], allowFallbacks: false, sort: 'latency' });
    expect(o.maxPrice).toEqual({ prompt: 1_000_000n, completion: 2_500_000n });
  });

  it('reads sort as an object, and accepts the preferences it cannot act on', () => {
    expect(
      parse({
        provider: {
          sort: { by: 'throughput', partition: 'none' },
          data_collection: 'deny',
          zdr: true,
          require_parameters: true,
          quantizations: ['fp8'],
          preferred_max_latency: { p90: 2 },
        },
      }).sort,
    ).toBe('throughput');
  });

  it('turns :nitro and :floor into a sort by throughput and by price', () => {
    expect(parseRoutingOptions(req({ model: 'acme/a:nitro' }), a, ctx).sort).toBe('throughput');
    expect(parseRoutingOptions(req({ model: 'acme/a:floor' }), a, ctx).sort).toBe('price');
    // An explicit provider.sort wins over the suffix.
    expect(parseRoutingOptions(req({ model: 'acme/a:floor', provider: { sort: 'latency' } }), a, ctx).sort).toBe('latency');
  });

  it('refuses unknown values and malformed options with 400, naming the parameter', () => {
    expect(rejects({ models: 'acme/b' }).param).toBe('models');
    expect(rejects({ models: ['acme/b', 'nope/x'] }).param).toBe('models[1]');
    expect(rejects({ models: [1] }).param).toBe('models[0]');
    expect(rejects({ models: ['acme/b', 'acme/embed'] }).message).toMatch(
      /"models\[1\]" "acme\/embed" is an embedding model; it cannot stand in for the chat model "acme\/a"/,
    );
    expect(rejects({ models: Array.from({ length: 11 }, () => 'acme/b') }).param).toBe('models');
    expect(rejects({ provider: 'fast' }).param).toBe('provider');
    expect(rejects({ provider: { sort: 'fastest' } }).message).toMatch(/"provider\.sort" must be one of price, throughput, latency/);
    expect(rejects({ provider: { sort: { by: 'price', partition: 'all' } } }).param).toBe('provider.sort.partition');
    expect(rejects({ provider: { order: [''] } }).param).toBe('provider.order[0]');
    expect(rejects({ provider: { only: 'gpu-1' } }).param).toBe('provider.only');
    expect(rejects({ provider: { allow_fallbacks: 'no' } }).param).toBe('provider.allow_fallbacks');
    expect(rejects({ provider: { max_price: { prompt: -1 } } }).param).toBe('provider.max_price.prompt');
    expect(rejects({ provider: { max_price: { tokens: 1 } } }).param).toBe('provider.max_price.tokens');
    expect(rejects({ provider: { data_collection: 'maybe' } }).param).toBe('provider.data_collection');
    expect(rejects({ provider: { quantizations: ['int3'] } }).param).toBe('provider.quantizations[0]');
    expect(rejects({ provider: { fastest: true } }).message).toMatch(
      /"provider\.fastest" is not a provider preference; known: order, only/,
    );
  });
});

describe('splitVariant', () => {
  it('knows :nitro and :floor only', () => {
    expect(splitVariant('x/y:nitro')).toEqual({ base: 'x/y', sort: 'throughput' });
    expect(splitVariant('qwen2.5:7b')).toBeUndefined();
    expect(splitVariant(':nitro')).toBeUndefined();
  });
});

describe('allowedRoutes and applyOrder', () => {
  const ids = (rs: readonly RouteDef[]) => rs.map((r) => r.id);

  it('keeps only the providers named by only, by route id, kind or kind argument', () => {
    expect(ids(allowedRoutes(a, a.routes, parse({ provider: { only: ['vllm', 'together'] } })))).toEqual(['gpu-1', 'or']);
  });

  it('drops ignored providers and routes above max_price', () => {
    expect(ids(allowedRoutes(a, a.routes, parse({ provider: { ignore: ['gpu-1'] } })))).toEqual(['deepseek-api', 'or']);
    expect(ids(allowedRoutes(a, a.routes, parse({ provider: { max_price: { prompt: 1 } } })))).toEqual(['gpu-1', 'or']);
  });

  it('returns the same array when nothing filters', () => {
    expect(allowedRoutes(a, a.routes, NO_OPTIONS)).toBe(a.routes);
  });

  it('puts the ordered providers first, then the rest unless fallbacks are off', () => {
    const planned = a.routes;
    expect(ids(applyOrder(planned, parse({ provider: { order: ['together', 'deepseek'] } })))).toEqual(['or', 'deepseek-api', 'gpu-1']);
    expect(ids(applyOrder(planned, parse({ provider: { order: ['together', 'deepseek'], allow_fallbacks: false } })))).toEqual([
      'or',
      'deepseek-api',
    ]);
    expect(ids(applyOrder(planned, parse({ provider: { allow_fallbacks: false } })))).toEqual(['gpu-1']);
  });
});
