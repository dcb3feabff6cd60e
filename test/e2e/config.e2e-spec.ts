import { startGateway } from '../helpers/gateway';

/** A bad configuration stops the start with a message a person can act on. */
describe('configuration errors at boot', () => {
  const boot = (models: string, env: Record<string, string> = {}, routing?: string) => startGateway({ models, env, routing });

  it('names the file, line, key and variable of an unset ${VAR}', async () => {
    const yaml = [
      'models:',
      '  - id: a',
      '    context_length: 10',
      '    route:',
      '      - kind: vllm',
      '        base_url: ${NOT_SET_ANYWHERE_1}',
      '',
    ].join('\n');
    await expect(boot(yaml)).rejects.toThrow(
      /models\.yaml:6 \(models\[0\]\.route\[0\]\.base_url\): environment variable NOT_SET_ANYWHERE_1 is not set/,
    );
  });

  it('expands ${VAR:-default} and skips an optional route whose variables are unset', async () => {
    const yaml = `
models:
  - id: a
    context_length: 10
    route:
      - { kind: mock, id: "\${MOCK_ROUTE_NAME:-from-default}" }
      - { kind: vllm, optional: true, base_url: "\${NOT_SET_ANYWHERE_2}" }
`;
    const gw = await boot(yaml);
    try {
      const routing = (await (await fetch(`${gw.url}/routing`)).json()) as { models: Array<{ routes: Array<{ id: string }> }> };
      expect(routing.models[0].routes.map((r) => r.id)).toEqual(['from-default']);
    } finally {
      await gw.close();
    }
  });

  it('refuses a route kind that no adapter serves', async () => {
    const yaml = 'models:\n  - id: a\n    context_length: 10\n    route:\n      - kind: carrier-pigeon\n';
    await expect(boot(yaml)).rejects.toThrow(
      /models\.yaml:5 \(models\[0\]\.route\[0\]\): kind "carrier-pigeon" has no adapter \(known: .*openai_compat.*\)/,
    );
  });

  it('refuses an unknown routing strategy', async () => {
    const yaml = 'models:\n  - id: a\n    context_length: 10\n    router: telepathy\n    route: [{ kind: mock }]\n';
    await expect(boot(yaml)).rejects.toThrow(/router "telepathy" is unknown \(known: .*weighted.*\)/);
    await expect(
      boot('models:\n  - id: a\n    context_length: 10\n    route: [{ kind: mock }]\n', {}, 'routing_strategy: dice\n'),
    ).rejects.toThrow(/routing_strategy "dice" is unknown/);
  });

  it('refuses an openai_compat route without base_url', async () => {
    await expect(boot('models:\n  - id: a\n    context_length: 10\n    route:\n      - kind: deepseek\n')).rejects.toThrow(
      /route kind deepseek needs base_url/,
    );
  });

  it('reports YAML syntax errors with their line', async () => {
    await expect(boot('models:\n  - id: a\n    context_length: [10\n')).rejects.toThrow(/models\.yaml:\d+: YAML syntax error/);
  });

  it('names a bad environment variable', async () => {
    await expect(boot('models: []\n', { PORT: 'eighty' })).rejects.toThrow(/PORT="eighty"/);
    await expect(boot('models: []\n', { DB_BACKEND: 'oracle' })).rejects.toThrow(/DB_BACKEND="oracle"/);
  });
});
