import { testRoute } from '../../../test/helpers/route';
import type { RouteDef } from '../../config/registry.types';
import { openRouterBody, openRouterHeaders } from './openrouter.mapper';

const route = (o: Partial<RouteDef> = {}): RouteDef =>
  testRoute({ id: 'or', kind: 'openrouter', providerModelId: 'meta-llama/llama-3.1-8b-instruct', ...o });

describe('openRouterBody', () => {
  it('asks for usage accounting and leaves provider routing to OpenRouter when nothing is pinned', () => {
    const body = openRouterBody({ model: 'm', messages: [] }, route());
    expect(body).toEqual({ model: 'm', messages: [], usage: { include: true } });
  });

  it('pins kind openrouter[slug] to that provider without fallbacks', () => {
    const body = openRouterBody({ model: 'm' }, route({ kindArg: 'deepinfra' }));
    expect(body.provider).toEqual({ order: ['deepinfra'], allow_fallbacks: false });
  });

  it("merges the route's provider preferences under the pin", () => {
    const body = openRouterBody(
      { model: 'm' },
      route({ kindArg: 'together', options: { provider: { data_collection: 'deny', order: ['x'], allow_fallbacks: true } } }),
    );
    expect(body.provider).toEqual({ data_collection: 'deny', order: ['together'], allow_fallbacks: false });
  });

  it("passes the client's policy preferences on, never its routing choices; the stricter data policy holds", () => {
    const client = {
      order: ['x'],
      only: ['y'],
      sort: 'price',
      allow_fallbacks: true,
      data_collection: 'deny',
      zdr: true,
      quantizations: ['fp8'],
      max_price: { prompt: 1 },
    };
    const body = openRouterBody({ model: 'm', provider: client }, route({ options: { provider: { data_collection: 'allow' } } }));
    expect(body.provider).toEqual({ data_collection: 'deny', zdr: true, quantizations: ['fp8'], max_price: { prompt: 1 } });
    // Nothing of the client's to pass: no provider at all.
    expect(openRouterBody({ model: 'm', provider: { order: ['x'] } }, route())).not.toHaveProperty('provider');
  });

  it('does not ask for accounting on embeddings', () => {
    expect(openRouterBody({ model: 'm' }, route(), false)).not.toHaveProperty('usage');
  });
});

describe('openRouterHeaders', () => {
  it('adds the attribution headers that are configured', () => {
    expect(openRouterHeaders({ a: '1' }, 'https://app.example', 'My App')).toEqual({
      a: '1',
      'HTTP-Referer': 'https://app.example',
      'X-Title': 'My App',
    });
    expect(openRouterHeaders({ a: '1' }, undefined, undefined)).toEqual({ a: '1' });
  });
});
