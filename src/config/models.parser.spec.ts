import { presentModel } from '../gateway/models.presenter';
import { MockAdapter } from '../adapters/mock/mock.adapter';
import { FREE } from '../common/money';
import { parseModels } from './models.parser';
import type { RouteDef, RoutingDef } from './registry.types';
import { EMPTY_ROUTING, parseRouting } from './routing.parser';
import { ConfigError, YamlSource } from './yaml-source';

const CREATED = 1_700_000_000;

/** Lines of YAML; line 1 of the file is the first element. */
const yaml = (...lines: string[]) => lines.join('\n') + '\n';

function load(text: string, opts: { vars?: Record<string, string>; routing?: RoutingDef } = {}) {
  const warnings: string[] = [];
  const models = parseModels(YamlSource.parse('models.yaml', text, opts.vars ?? {}), {
    routing: opts.routing ?? EMPTY_ROUTING,
    defaultCreated: CREATED,
    warn: (m) => warnings.push(m),
  });
  return { models, warnings };
}

function problemsOf(text: string, opts: { vars?: Record<string, string>; routing?: RoutingDef } = {}): string[] {
  try {
    load(text, opts);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, but the models loaded');
}

function routingFrom(text: string): RoutingDef {
  return parseRouting(YamlSource.parse('routing.yaml', text, {}), () => undefined);
}

/** A model with one route, with extra route lines. */
const oneRoute = (...routeLines: string[]) =>
  yaml('models:', '  - id: m', '    context_length: 8192', '    route:', ...routeLines.map((l) => `      ${l}`));

describe('parseModels: a valid model', () => {
  const seedStyle = yaml(
    'models:', //                                   1
    '  - id: acme/chat', //                         2
    '    context_length: 32768', //                 3
    '    max_output_length: 4096', //               4
    '    pricing:', //                              5
    '      prompt: "0.10"', //                      6
    '      completion: 0.4', //                     7
    '      input_cache_reads: "0.025"', //          8
    '      input_cache_writes: "0.125"', //         9
    '      request: "0.001"', //                    10
    '    route:', //                                11
    '      - kind: vllm', //                        12
    '        base_url: http://gpu-1:8000/v1', //    13
    '        api_key: sk-local', //                 14
    '        provider_model_id: acme/Chat-7B', //   15
  );

  it('fills in the defaults and reads the seed spellings', () => {
    const { models, warnings } = load(seedStyle);
    expect(warnings).toEqual([]);
    expect(models).toHaveLength(1);
    const m = models[0];
    expect(m).toMatchObject({
      id: 'acme/chat',
      name: 'acme/chat',
      description: '',
      created: CREATED,
      type: 'chat',
      contextLength: 32768,
      maxCompletionTokens: 4096,
      isModerated: false,
      aliases: [],
      router: undefined,
      routerParams: {},
      where: 'models.yaml:2 (models[0])',
    });
    expect(m.architecture).toEqual({
      modality: 'text->text',
      input_modalities: ['text'],
      output_modalities: ['text'],
      tokenizer: 'Other',
      instruct_type: null,
    });
    expect(m.supportedParameters).toEqual(
      expect.arrayContaining(['max_tokens', 'temperature', 'top_p', 'stop', 'seed', 'tools', 'tool_choice', 'response_format']),
    );
    expect(m.pricing).toEqual({
      prompt: { text: '0.1', pico: 100_000n },
      completion: { text: '0.4', pico: 400_000n },
      request: { text: '0.001', pico: 1_000_000_000n },
      image: FREE,
      input_cache_read: { text: '0.025', pico: 25_000n },
      input_cache_write: { text: '0.125', pico: 125_000n },
    });
  });

  it('reads the route', () => {
    const route = load(seedStyle).models[0].routes[0];
    expect(route).toEqual({
      id: 'vllm',
      kind: 'vllm',
      kindArg: undefined,
      baseUrl: 'http://gpu-1:8000/v1',
      apiKeys: ['sk-local'],
      providerModelId: 'acme/Chat-7B',
      weight: 1,
      locality: 'remote',
      headers: {},
      extraBody: undefined,
      timeouts: {},
      pricing: undefined,
      options: {},
      where: 'models.yaml:12 (models[0].route[0])',
    });
  });

  it("takes a route's prices over its model's key by key: what the route leaves out is the model's, not free", () => {
    const { models } = load(
      yaml(
        'models:',
        '  - id: acme/priced',
        '    context_length: 8192',
        '    pricing: { prompt: 1, completion: 2, input_cache_read: "0.5", request: "0.001" }',
        '    route:',
        '      - { kind: mock, id: dear, pricing: { prompt: 10 } }',
        '      - { kind: mock, id: free, pricing: { prompt: 0, completion: 0, request: 0 } }',
      ),
    );
    const [dear, free] = models[0].routes;
    expect(dear.pricing).toMatchObject({ prompt: { text: '10' }, completion: { text: '2' }, request: { text: '0.001' } });
    // A cache price goes with the prompt price it was set against: the route's own prompt price replaces it.
    expect(dear.pricing).not.toHaveProperty('input_cache_read');
    expect(free.pricing).toMatchObject({ prompt: { pico: 0n }, completion: { pico: 0n }, request: { pico: 0n } });
    expect(free.pricing).not.toHaveProperty('input_cache_read');
    // Both token prices: a whole price list, as a route's pricing always was (a free local route).
    const whole = load(
      yaml(
        'models:',
        '  - id: acme/priced',
        '    context_length: 8192',
        '    pricing: { prompt: 1, completion: 2, request: "0.01", image: "0.005", web_search: "0.01", input_cache_read: "0.1" }',
        '    route:',
        '      - { kind: mock, pricing: { prompt: 0, completion: 0 } }',
      ),
    ).models[0].routes[0];
    expect(whole.pricing).toEqual({
      prompt: { text: '0', pico: 0n },
      completion: { text: '0', pico: 0n },
      request: { text: '0', pico: 0n },
      image: { text: '0', pico: 0n },
    });
    const cheaper = load(
      yaml(
        'models:',
        '  - id: acme/priced',
        '    context_length: 8192',
        '    pricing: { prompt: 1, completion: 2, input_cache_read: "0.5" }',
        '    route:',
        '      - { kind: mock, pricing: { completion: 3 } }',
      ),
    ).models[0].routes[0];
    expect(cheaper.pricing).toMatchObject({ prompt: { text: '1' }, completion: { text: '3' }, input_cache_read: { text: '0.5' } });
  });

  it("reads OpenRouter's spellings", () => {
    const { models } = load(
      yaml(
        'models:',
        '  - id: acme/reasoner',
        '    name: "Acme: Reasoner"',
        '    canonical_slug: acme/reasoner-20251121',
        '    hugging_face_id: acme/Reasoner-7B',
        '    description: Thinks first.',
        '    created: 1763683200',
        '    context_length: 65536',
        '    max_completion_tokens: 16384',
        '    architecture:',
        '      input_modalities: [text, image]',
        '      output_modalities: [text]',
        '      tokenizer: Llama3',
        '    supported_parameters: [temperature, reasoning]',
        '    pricing:',
        '      prompt: 1',
        '      completion: "4"',
        '      input_cache_read: "0.25"',
        '      input_cache_write: "1.25"',
        '      input_cache_write_1h: "2"',
        '      internal_reasoning: "5"',
        '      web_search: "0.01"',
        '    routes:',
        '      - kind: openai_compat',
        '        base_url: https://api.acme.ai/v1',
      ),
    );
    const m = models[0];
    expect(m).toMatchObject({
      name: 'Acme: Reasoner',
      description: 'Thinks first.',
      created: 1763683200,
      maxCompletionTokens: 16384,
      supportedParameters: ['temperature', 'reasoning'],
    });
    expect(m.architecture).toEqual({
      modality: 'text+image->text',
      input_modalities: ['text', 'image'],
      output_modalities: ['text'],
      tokenizer: 'Llama3',
      instruct_type: null,
    });
    expect(m.pricing.input_cache_read).toEqual({ text: '0.25', pico: 250_000n });
    expect(m.pricing.input_cache_write).toEqual({ text: '1.25', pico: 1_250_000n });
    expect(m.pricing.input_cache_write_1h).toEqual({ text: '2', pico: 2_000_000n });
    expect(m.pricing.internal_reasoning).toEqual({ text: '5', pico: 5_000_000n });
    expect(m.routes.map((r) => r.id)).toEqual(['openai_compat']);
    // Listed in /v1/models as OpenRouter lists them.
    expect(presentModel(m)).toMatchObject({
      canonical_slug: 'acme/reasoner-20251121',
      hugging_face_id: 'acme/Reasoner-7B',
      pricing: { internal_reasoning: '0.000005', web_search: '0.01' },
    });
    const plain = presentModel(load(oneRoute('- kind: mock')).models[0]);
    expect(plain).toMatchObject({ canonical_slug: plain.id, hugging_face_id: null });
    expect(plain.pricing).not.toHaveProperty('web_search');
  });

  it('leaves tools out of the default parameters when the model does not support them', () => {
    const { models } = load(
      yaml('models:', '  - id: m', '    context_length: 1', '    supports_tools: false', '    route:', '      - kind: mock'),
    );
    expect(models[0].supportedParameters).toContain('temperature');
    expect(models[0].supportedParameters).not.toContain('tools');
  });

  it("gives an embedding model the embeddings endpoint's parameters, not the chat ones", () => {
    const { models } = load(
      yaml('models:', '  - id: e', '    type: embedding', '    context_length: 512', '    route:', '      - kind: mock'),
    );
    expect(models[0].supportedParameters).toEqual(['dimensions', 'encoding_format', 'user']);
  });

  it('keeps aliases', () => {
    const { models } = load(
      yaml('models:', '  - id: acme/chat', '    aliases: [chat, acme-chat]', '    context_length: 1', '    route:', '      - kind: mock'),
    );
    expect(models[0].aliases).toEqual(['chat', 'acme-chat']);
  });

  it('warns about a price finer than a pico-dollar a token (or a unit), and says what it bills', () => {
    const { models, warnings } = load(
      yaml(
        'models:',
        '  - id: m',
        '    context_length: 1',
        '    pricing: { prompt: "0.123456789", completion: 0.0000001, request: "0.0000000000005", image: "0.1000000" }',
        '    route:',
        '      - kind: mock',
      ),
    );
    expect(models[0].pricing.prompt).toEqual({ text: '0.123457', pico: 123_457n });
    expect(warnings).toEqual([
      expect.stringMatching(/^models\.yaml:4 \(models\[0\]\.pricing\.prompt\): 0\.123456789 is finer .*; billed as 0\.123457$/),
      expect.stringMatching(/\.pricing\.completion\): 1e-7 is finer .*; billed as 0$/),
      expect.stringMatching(
        /\.pricing\.request\): 0\.0000000000005 is finer than the gateway counts \(1e-12 USD\); billed as 0\.000000000001$/,
      ),
    ]);
  });

  it('warns about an unknown model key', () => {
    const { warnings } = load(
      yaml('models:', '  - id: m', '    context_lenght: 5', '    context_length: 1', '    route:', '      - kind: mock'),
    );
    expect(warnings).toEqual([expect.stringMatching(/^models\.yaml:3 \(models\[0\]\.context_lenght\): unknown model key/)]);
  });
});

describe('parseModels: errors name file, line and key', () => {
  it('rejects a duplicate model id', () => {
    const problems = problemsOf(
      yaml(
        'models:',
        '  - id: m',
        '    context_length: 1',
        '    route: [{kind: mock}]',
        '  - id: m',
        '    context_length: 1',
        '    route: [{kind: mock}]',
      ),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^models\.yaml:5 \(models\[1\]\): model id or alias "m" is already used at models\.yaml:2/),
    ]);
  });

  it("rejects an alias that is another model's id", () => {
    const problems = problemsOf(
      yaml(
        'models:',
        '  - id: a',
        '    context_length: 1',
        '    route: [{kind: mock}]',
        '  - id: b',
        '    aliases: [a]',
        '    context_length: 1',
        '    route: [{kind: mock}]',
      ),
    );
    expect(problems).toEqual([expect.stringMatching(/models\[1\]\): model id or alias "a" is already used/)]);
  });

  it('rejects a model without context_length, or with one left empty', () => {
    expect(problemsOf(yaml('models:', '  - id: m', '    route: [{kind: mock}]'))).toEqual([
      expect.stringMatching(/^models\.yaml:2 \(models\[0\]\.context_length\): is required/),
    ]);
    for (const empty of ['', ' ~'])
      expect(problemsOf(yaml('models:', '  - id: m', `    context_length:${empty}`, '    route: [{kind: mock}]'))).toEqual([
        expect.stringMatching(/\(models\[0\]\.context_length\): is required/),
      ]);
  });

  it('rejects a model without routes', () => {
    expect(problemsOf(yaml('models:', '  - id: m', '    context_length: 1'))).toEqual([
      expect.stringMatching(/^models\.yaml:2 \(models\[0\]\.route\): must be a non-empty list/),
    ]);
    expect(problemsOf(yaml('models:', '  - id: m', '    context_length: 1', '    route: []'))[0]).toMatch(
      /^models\.yaml:4 \(models\[0\]\.route\): must be a non-empty list/,
    );
  });

  it('rejects router_params that are not a mapping', () => {
    const text = (v: string) =>
      yaml('models:', '  - id: m', '    context_length: 1', `    router_params: ${v}`, '    route: [{kind: mock}]');
    expect(problemsOf(text('exploration'))).toEqual([
      expect.stringMatching(/^models\.yaml:4 \(models\[0\]\.router_params\): must be a mapping, got/),
    ]);
    expect(problemsOf(text('[0.5]'))[0]).toMatch(/router_params\): must be a mapping/);
    expect(load(text('{exploration: 0.5}')).models[0].routerParams).toEqual({ exploration: 0.5 });
  });

  it('rejects a kind that is not a kind', () => {
    expect(problemsOf(oneRoute('- base_url: http://h', '  kind: open ai'))).toEqual([
      expect.stringMatching(/^models\.yaml:6 \(models\[0\]\.route\[0\]\.kind\): "open ai" is not a route kind/),
    ]);
  });

  it('rejects a route without kind', () => {
    expect(problemsOf(oneRoute('- base_url: http://h'))[0]).toMatch(/^models\.yaml:5 \(models\[0\]\.route\[0\]\.kind\): is required/);
  });

  it.each(['ftp://gpu-1/v1', 'gpu-1:8000', 'not a url'])('rejects base_url %s', (url) => {
    const problems = problemsOf(oneRoute('- kind: vllm', `  base_url: "${url}"`));
    expect(problems).toEqual([
      expect.stringMatching(/^models\.yaml:6 \(models\[0\]\.route\[0\]\.base_url\): ".*" is not an http\(s\) URL/),
    ]);
  });

  it('names a bad secret without showing it, and masks the credentials of a URL it shows', () => {
    const [keys] = problemsOf(oneRoute('- kind: vllm', '  base_url: http://h/v1', '  api_keys: sk-LEAK-not-a-list'));
    expect(keys).toMatch(/\(models\[0\]\.route\[0\]\.api_keys\): must be a list of strings, got string \(hidden\)/);
    const [key] = problemsOf(oneRoute('- kind: vllm', '  base_url: http://h/v1', '  api_key: [sk-LEAK]'));
    expect(key).toMatch(/api_key/);
    const [url] = problemsOf(oneRoute('- kind: vllm', '  base_url: "ftp://user:sk-LEAK@h/v1"'));
    expect(url).toMatch(/"ftp:\/\/\*\*\*@h\/v1" is not an http\(s\) URL/);
    // Credentials in its query too, in a URL that does not even parse; other parameters stay readable.
    const [query] = problemsOf(oneRoute('- kind: vllm', '  base_url: "ftp://h x/v1?key=LEAK1&region=eu&sig=LEAK2&pwd=LEAK3"'));
    expect(query).toContain('"ftp://h x/v1?key=***&region=eu&sig=***&pwd=***" is not an http(s) URL');
    for (const p of [keys, key, url]) expect(p).not.toContain('sk-LEAK');
  });

  it('rejects a negative weight', () => {
    expect(problemsOf(oneRoute('- kind: mock', '  weight: -1'))).toEqual([
      expect.stringMatching(/^models\.yaml:6 \(models\[0\]\.route\[0\]\.weight\): must be at least 0/),
    ]);
  });

  it('rejects a time longer than a Node timer holds (it would fire at once)', () => {
    expect(problemsOf(oneRoute('- kind: mock', '  timeouts: { first_token_ms: 3000000000 }'))).toEqual([
      expect.stringMatching(/\(models\[0\]\.route\[0\]\.timeouts\.first_token_ms\): must be at most 2147483647/),
    ]);
    expect(problemsOf(oneRoute('- kind: mock', '  timeout: 3000000'))).toEqual([
      expect.stringMatching(/\(models\[0\]\.route\[0\]\.timeout\): must be at most 2147483\.647/),
    ]);
  });

  it('rejects mock settings it could not serve: an answer too long to build, a wait no timer holds', () => {
    const mock = new MockAdapter();
    const route = (options: Record<string, unknown>) => ({ where: 'r', options }) as unknown as RouteDef;
    expect(mock.validateRoute(route({ tokens: 99_999_999_999, ttft_ms: 3_000_000_000 }))).toEqual([
      'r: ttft_ms must be a number from 0 to 2147483647',
      'r: tokens must be a number from 0 to 1000000',
    ]);
    expect(mock.validateRoute(route({ tokens: Infinity }))).toEqual(['r: tokens must be a number from 0 to 1000000']);
    expect(mock.validateRoute(route({ tokens: 1000, ttft_ms: 5 }))).toEqual([]);
  });

  it('reports an unset variable where an alias uses it, not where the anchor is held', () => {
    const text = (optional: boolean) =>
      yaml(
        'x-keys:',
        '  upstream: &k "${UPSTREAM_KEY}"',
        'models:',
        '  - id: m1',
        '    context_length: 1000',
        '    route:',
        '      - kind: mock',
        `      - {kind: vllm, base_url: "http://h/v1", api_key: *k${optional ? ', optional: true' : ''}}`,
      );
    expect(problemsOf(text(false))).toEqual([
      expect.stringMatching(/models\[0\]\.route\[1\]\.api_key\): environment variable UPSTREAM_KEY is not set/),
    ]);
    // Used only by an optional route: that route is skipped, and the start goes on.
    expect(load(text(true)).models[0].routes).toHaveLength(1);
  });

  it('merges YAML merge keys, and warns about a top-level key that holds nothing it reads', () => {
    const { models, warnings } = load(
      yaml(
        'x-route: &fast {kind: mock, tokens: 7}',
        'modelz: []',
        'models:',
        '  - id: m',
        '    context_length: 1000',
        '    route:',
        '      - <<: *fast',
        '        weight: 2',
      ),
    );
    expect(models[0].routes[0]).toMatchObject({ kind: 'mock', weight: 2, options: { tokens: 7 } });
    expect(warnings).toEqual([expect.stringMatching(/unknown top-level key "modelz" ignored/)]);
  });

  it('rejects an unset variable without default, naming file, line, key and variable', () => {
    const problems = problemsOf(oneRoute('- kind: vllm', '  base_url: ${VLLM_URL}'));
    expect(problems).toEqual([
      expect.stringMatching(/^models\.yaml:6 \(models\[0\]\.route\[0\]\.base_url\): environment variable VLLM_URL is not set/),
    ]);
  });

  it('reports every problem at once', () => {
    const problems = problemsOf(
      yaml(
        'models:',
        '  - id: a',
        '    route: [{kind: mock, weight: -2}]',
        '  - id: b',
        '    context_length: 1',
        '    route: [{kind: "x y"}]',
      ),
    );
    expect(problems).toHaveLength(3);
  });
});

describe('parseModels: optional routes', () => {
  const model = (...routeLines: string[]) =>
    yaml(
      'models:',
      '  - id: m',
      '    context_length: 1',
      '    route:',
      ...routeLines.map((l) => `      ${l}`),
      '  - id: other',
      '    context_length: 1',
      '    route: [{kind: mock}]',
    );

  it('skips an optional route whose variable is unset, with a warning', () => {
    const { models, warnings } = load(
      model('- kind: vllm', '  optional: true', '  base_url: ${VLLM_URL}', '- kind: openai_compat', '  base_url: https://api.acme.ai/v1'),
    );
    expect(models[0].routes.map((r) => r.id)).toEqual(['openai_compat']);
    expect(warnings).toEqual([
      expect.stringMatching(/^models\.yaml:5 \(models\[0\]\.route\[0\]\): optional route skipped: VLLM_URL not set/),
    ]);
  });

  it('keeps an optional route whose variables are set', () => {
    const { models, warnings } = load(model('- kind: vllm', '  optional: true', '  base_url: ${VLLM_URL}'), {
      vars: { VLLM_URL: 'http://gpu:8000/v1' },
    });
    expect(models[0].routes.map((r) => r.baseUrl)).toEqual(['http://gpu:8000/v1']);
    expect(warnings).toEqual([]);
  });

  it('skips an optional route whose ${VAR} (no default) is set but blank', () => {
    const yaml = [
      'models:',
      '  - id: m',
      '    context_length: 10',
      '    route:',
      '      - kind: mock',
      '      - { kind: vllm, optional: true, base_url: "http://gpu:8000/v1", api_key: "${STAGING_KEY}" }',
      '',
    ].join('\n');
    const { models, warnings } = load(yaml, { vars: { STAGING_KEY: '' } });
    expect(models[0].routes.map((r) => r.kind)).toEqual(['mock']);
    expect(warnings).toEqual([expect.stringMatching(/route\[1\]\): optional route skipped: STAGING_KEY is blank/)]);
  });

  it('keeps an optional route whose key has an explicit empty default (a keyless local server)', () => {
    const yaml = [
      'models:',
      '  - id: m',
      '    context_length: 10',
      '    route:',
      '      - { kind: vllm, optional: true, base_url: "${VLLM_URL}", api_key: "${VLLM_KEY:-}" }',
      '',
    ].join('\n');
    const { models, warnings } = load(yaml, { vars: { VLLM_URL: 'http://gpu:8000/v1' } });
    expect(models[0].routes).toHaveLength(1);
    expect(models[0].routes[0].apiKeys).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it('skips an optional route whose base_url is blank', () => {
    const { models, warnings } = load(
      model(
        '- kind: vllm',
        '  optional: true',
        '  base_url: ${VLLM_URL:-}',
        '- kind: sglang',
        '  optional: true',
        '  base_url: ""',
        '- kind: mock',
      ),
    );
    expect(models[0].routes.map((r) => r.id)).toEqual(['mock']);
    expect(warnings).toHaveLength(2);
    expect(warnings.every((w) => /optional route skipped: base_url is blank/.test(w))).toBe(true);
  });

  it('drops a model whose only routes were skipped, with a warning, and keeps the others', () => {
    const { models, warnings } = load(model('- kind: vllm', '  optional: true', '  base_url: ${VLLM_URL}'));
    expect(models.map((m) => m.id)).toEqual(['other']);
    expect(warnings).toEqual([
      expect.stringMatching(/optional route skipped/),
      expect.stringMatching(/^models\.yaml:2 \(models\[0\]\): model "m" has no usable route/),
    ]);
  });

  it('still rejects an unset variable in a route that is not optional', () => {
    const problems = problemsOf(model('- kind: vllm', '  optional: true', '  base_url: ${A}', '- kind: vllm', '  base_url: ${B}'));
    expect(problems).toEqual([expect.stringMatching(/\(models\[0\]\.route\[1\]\.base_url\): environment variable B is not set/)]);
  });
});

describe('parseModels: route fields', () => {
  it('names routes after their kind and de-duplicates the names', () => {
    const { models } = load(
      oneRoute(
        '- kind: vllm',
        '- kind: vllm',
        '- kind: openai_compat',
        '- kind: vllm',
        '- {kind: vllm, id: primary}',
        '- {kind: vllm, name: backup}',
      ),
    );
    expect(models[0].routes.map((r) => r.id)).toEqual(['vllm', 'vllm-2', 'openai_compat', 'vllm-3', 'primary', 'backup']);
  });

  it('refuses the same given id twice in one model, naming the line (numbered, it would be ambiguous)', () => {
    const problems = problemsOf(oneRoute('- {kind: vllm, id: gpu}', '- {kind: vllm, id: cloud}', '- {kind: openai_compat, name: gpu}'));
    expect(problems).toEqual([
      expect.stringMatching(/\(models\[0\]\.route\[2\]\.name\): "gpu" is the id of another route of this model already/),
    ]);
    // Also one a default took (numbered), and a number.
    expect(problemsOf(oneRoute('- kind: vllm', '- kind: vllm', '- {kind: vllm, id: vllm-2}'))).toEqual([
      expect.stringMatching(/\(models\[0\]\.route\[2\]\.id\): "vllm-2" is the id of another route/),
    ]);
    expect(problemsOf(oneRoute('- {kind: vllm, id: 5}', '- {kind: vllm, id: 5}'))).toEqual([
      expect.stringMatching(/\(models\[0\]\.route\[1\]\.id\): "5" is the id of another route/),
    ]);
    // A default id that meets a given one is still numbered.
    expect(load(oneRoute('- {kind: vllm, id: vllm}', '- kind: vllm')).models[0].routes.map((r) => r.id)).toEqual(['vllm', 'vllm-2']);
  });

  it('splits kind: openrouter[deepinfra] into kind and argument', () => {
    const route = load(oneRoute('- kind: openrouter[deepinfra]')).models[0].routes[0];
    expect(route).toMatchObject({ kind: 'openrouter', kindArg: 'deepinfra', id: 'openrouter:deepinfra' });
  });

  it('hands unknown route keys to the adapter as options', () => {
    const route = load(oneRoute('- kind: mock', '  ttft_ms: 150', '  tokens: ${DEMO_TOKENS:-48}', '  weight: 2')).models[0].routes[0];
    expect(route.options).toEqual({ ttft_ms: 150, tokens: '48' });
    expect(route.weight).toBe(2);
  });

  it('reads timeouts in milliseconds and timeout in seconds', () => {
    const route = load(oneRoute('- kind: mock', '  timeout: 1.5', '  timeouts: {connect_ms: 500, first_token_ms: 2000, idle_ms: 3000}'))
      .models[0].routes[0];
    expect(route.timeouts).toEqual({ totalMs: 1500, connectMs: 500, firstTokenMs: 2000, idleMs: 3000 });
  });

  it('rejects an unknown timeout', () => {
    expect(problemsOf(oneRoute('- kind: mock', '  timeouts: {connect: 500}'))[0]).toMatch(
      /\(models\[0\]\.route\[0\]\.timeouts\.connect\): unknown timeout/,
    );
  });

  it('reads keys, headers, extra_body and a route price', () => {
    const route = load(
      oneRoute(
        '- kind: openai_compat',
        '  base_url: https://api.acme.ai/v1',
        '  api_keys: [k1, "", k2]',
        '  headers: {X-Team: infra}',
        '  extra_body: {chat_template_kwargs: {enable_thinking: false}}',
        '  pricing: {prompt: "0.2", completion: "0.8"}',
      ),
    ).models[0].routes[0];
    expect(route.apiKeys).toEqual(['k1', 'k2']);
    expect(route.headers).toEqual({ 'X-Team': 'infra' });
    expect(route.extraBody).toEqual({ chat_template_kwargs: { enable_thinking: false } });
    expect(route.pricing?.prompt).toEqual({ text: '0.2', pico: 200_000n });
    expect(route.options).toEqual({});
  });
});

describe('parseModels: locality', () => {
  const route = (lines: string[], routing?: RoutingDef) =>
    load(yaml('models:', '  - id: llama', '    context_length: 1', '    route:', ...lines.map((l) => `      ${l}`)), { routing }).models[0]
      .routes[0];

  it('is remote unless something says otherwise', () => {
    expect(route(['- kind: vllm', '  base_url: http://gpu:8000/v1']).locality).toBe('remote');
  });

  it('follows local: true / false', () => {
    expect(route(['- kind: vllm', '  local: true']).locality).toBe('local');
    expect(route(['- kind: vllm', '  local: false']).locality).toBe('remote');
  });

  it('follows locality:', () => {
    expect(route(['- kind: vllm', '  locality: local']).locality).toBe('local');
    expect(problemsOf(oneRoute('- kind: vllm', '  locality: nearby'))[0]).toMatch(
      /\(models\[0\]\.route\[0\]\.locality\): must be local or remote/,
    );
  });

  it.each([
    ['http://gpu:8000/v1', 'http://gpu:8000'],
    ['http://gpu:8000', 'http://gpu:8000/v1'],
    ['http://gpu:8000/v1/', 'http://gpu:8000/v1'],
    ['http://gpu:8000/', 'http://gpu:8000/v1/'],
  ])('is local when routing.yaml lists the endpoint %s and the route uses %s', (endpoint, baseUrl) => {
    const routing = routingFrom(yaml('local_deployment:', `  - endpoint: ${endpoint}`));
    expect(route(['- kind: vllm', `  base_url: ${baseUrl}`], routing).locality).toBe('local');
  });

  it('matches a deployment that lists the model id or the provider model id', () => {
    const routing = routingFrom(
      yaml('local_deployment:', '  - endpoint: http://gpu:8000/v1', '    models: [llama, meta-llama/Llama-3.1-8B]'),
    );
    expect(route(['- kind: vllm', '  base_url: http://gpu:8000/v1'], routing).locality).toBe('local');

    const byProviderId = routingFrom(
      yaml('local_deployment:', '  - endpoint: http://gpu:8000/v1', '    models: [meta-llama/Llama-3.1-8B]'),
    );
    expect(
      route(['- kind: vllm', '  base_url: http://gpu:8000/v1', '  provider_model_id: meta-llama/Llama-3.1-8B'], byProviderId).locality,
    ).toBe('local');
  });

  it('does not match a deployment that lists other models only', () => {
    const routing = routingFrom(yaml('local_deployment:', '  - endpoint: http://gpu:8000/v1', '    models: [qwen]'));
    expect(route(['- kind: vllm', '  base_url: http://gpu:8000/v1'], routing).locality).toBe('remote');
  });

  it('lets the route itself override routing.yaml', () => {
    const routing = routingFrom(yaml('local_deployment:', '  - endpoint: http://gpu:8000/v1'));
    expect(route(['- kind: vllm', '  base_url: http://gpu:8000/v1', '  local: false'], routing).locality).toBe('remote');
  });
});

describe('the bundled config', () => {
  it('loads with no variables set, and the demo lists only what its mock honours', () => {
    const warnings: string[] = [];
    const routing = parseRouting(YamlSource.load('config/routing.yaml', {}), (m) => warnings.push(m));
    const models = parseModels(YamlSource.load('config/models.yaml', {}), {
      routing,
      defaultCreated: CREATED,
      warn: (m) => warnings.push(m),
      notice: () => undefined, // the optional routes skipped without their variables
    });
    // Models whose routes all need a variable are left out; nothing else is said.
    for (const w of warnings) expect(w).toMatch(/has no usable route \(every optional route was skipped\)/);
    const demo = models.find((m) => m.id === 'hybridinference/demo')!;
    expect(demo.routes.map((r) => r.kind)).toEqual(['mock']);
    // Its mock answers with a fixed text: never a tool call or JSON to a schema.
    for (const p of ['tools', 'tool_choice', 'response_format']) expect(demo.supportedParameters).not.toContain(p);
    expect(demo.supportedParameters).toContain('max_tokens');
  });
});
