import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Injectable, Module } from '@nestjs/common';
import { ModelRegistry } from '../../src/config/model-registry.service';
import type { RouteDef } from '../../src/config/registry.types';
import { RoutingStrategy, type StrategyInput } from '../../src/routing/routing-strategy';
import { startGateway } from '../helpers/gateway';

/** A platform team's strategy that declares the router_params it reads. */
@Injectable()
@RoutingStrategy({ name: 'spread', params: ['spread'] })
class SpreadStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    return [...input.routes];
  }

  shares(input: StrategyInput): number[] {
    return input.routes.map(() => 1 / input.routes.length);
  }
}

/** One that declares nothing: its models' router_params are not checked. */
@Injectable()
@RoutingStrategy('legacy')
class LegacyStrategy extends SpreadStrategy {}

@Module({ providers: [SpreadStrategy, LegacyStrategy] })
class PlatformStrategiesModule {}

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

  it('warns about route keys neither the gateway nor the adapter reads, at start and on reload', async () => {
    const yaml = `
models:
  - id: a
    context_length: 10
    route:
      - { kind: mock, id: typos, wieght: 3, tokenz: 5, colour: blue, context_length: 8, ttft_ms: 0 }
      - { kind: vllm, base_url: "http://127.0.0.1:9/v1", api_kye: secret }
`;
    const lines: string[] = [];
    const gw = await startGateway({ models: yaml, logLines: lines });
    const warnings = () => lines.map((l) => JSON.parse(l) as { level: string; msg: string }).filter((l) => l.level === 'warn');
    try {
      const route = (i: number) => `${join(gw.dir, 'models.yaml')}:${6 + i} (models[0].route[${i}])`;
      expect(warnings().map((w) => w.msg)).toEqual([
        `${route(0)}: unknown route key "wieght" ignored (did you mean "weight"?)`,
        `${route(0)}: unknown route key "tokenz" ignored (did you mean "tokens"?)`,
        expect.stringMatching(
          /route\[0\]\): unknown route key "colour" ignored \(a mock route reads id, name, kind, weight, .*ttft_ms, tokens, tokens_per_second\)$/,
        ),
        `${route(1)}: unknown route key "api_kye" ignored (did you mean "api_key" or "api_keys"?)`,
      ]);
      // A reload with the typo fixed says nothing more; one that brings a typo back says it again.
      lines.length = 0;
      writeFileSync(
        join(gw.dir, 'models.yaml'),
        yaml.replace('wieght', 'weight').replace(', tokenz: 5, colour: blue', '').replace('api_kye', 'api_key'),
      );
      gw.app.get(ModelRegistry).reload();
      expect(warnings()).toEqual([]);
      writeFileSync(join(gw.dir, 'models.yaml'), yaml.replace(', tokenz: 5, colour: blue', '').replace('api_kye', 'api_key'));
      gw.app.get(ModelRegistry).reload();
      expect(warnings().map((w) => w.msg)).toEqual([
        expect.stringContaining('unknown route key "wieght" ignored (did you mean "weight"?)'),
      ]);
    } finally {
      await gw.close();
    }
  });

  it("warns about router_params that neither the model's strategy nor the gateway reads, at start and on reload", async () => {
    const yaml = `
models:
  - id: latency
    context_length: 10
    router: least_latency
    router_params: { explortion: 0.5, expected_completion_tokens: 300 }
    route: [{ kind: mock }]
  - id: listed
    context_length: 10
    router: priority
    router_params: { exploration: 0.2 }
    route: [{ kind: mock }]
  - id: cheap
    context_length: 10
    router: cost
    router_params: { expected_completion_tokens: 100, colour: blue }
    route: [{ kind: mock }]
  - id: sorted
    context_length: 10
    router: priority
    router_params: { expected_completion_tokens: 50 }
    route: [{ kind: mock }]
  - id: own
    context_length: 10
    router: spread
    router_params: { spred: 2 }
    route: [{ kind: mock }]
  - id: undeclared
    context_length: 10
    router: legacy
    router_params: { anything: 1 }
    route: [{ kind: mock }]
`;
    const lines: string[] = [];
    const gw = await startGateway({
      models: yaml,
      logLines: lines,
      env: { ADMIN_TOKEN: 'router-params-admin-token' },
      imports: [PlatformStrategiesModule],
    });
    const warnings = () =>
      lines
        .map((l) => JSON.parse(l) as { level: string; msg: string })
        .filter((l) => l.level === 'warn')
        .map((w) => w.msg);
    const model = (i: number, line: number) => `${join(gw.dir, 'models.yaml')}:${line} (models[${i}])`;
    const expected = [
      `${model(0, 3)}: router_params key "explortion" ignored (did you mean "exploration"?)`,
      `${model(1, 8)}: router_params key "exploration" ignored (strategy priority reads no router_params; exploration is read by least_latency)`,
      `${model(2, 13)}: router_params key "colour" ignored (a cost model reads expected_completion_tokens)`,
      `${model(4, 23)}: router_params key "spred" ignored (did you mean "spread"?)`,
    ];
    try {
      // expected_completion_tokens is read for every model (provider.sort: price), and a strategy
      // that declares nothing (legacy) is not checked.
      expect(warnings()).toEqual(expected);
      lines.length = 0;
      const reload = async () => {
        const res = await fetch(`${gw.url}/admin/routing/reload`, {
          method: 'POST',
          headers: { authorization: 'Bearer router-params-admin-token' },
        });
        expect(res.status).toBe(200);
        return ((await res.json()) as { warnings: string[] }).warnings;
      };
      expect(await reload()).toEqual(expected);
      expect(warnings()).toEqual(expected);
      lines.length = 0;
      writeFileSync(
        join(gw.dir, 'models.yaml'),
        yaml
          .replace('explortion', 'exploration')
          .replace(
            'router: priority\n    router_params: { exploration: 0.2 }',
            'router: least_latency\n    router_params: { exploration: 0.2 }',
          )
          .replace(', colour: blue', '')
          .replace('spred', 'spread'),
      );
      expect(await reload()).toEqual([]);
      expect(warnings()).toEqual([]);
    } finally {
      await gw.close();
    }
  });

  it('says at start when DB_MIGRATIONS_RUN=false left the schema behind, and not when it is current', async () => {
    const yaml = 'models:\n  - id: a\n    context_length: 10\n    route: [{ kind: mock }]\n';
    const behind = (lines: string[]) =>
      lines
        .map((l) => JSON.parse(l) as { level: string; msg: string })
        .filter((l) => l.level === 'warn' && l.msg.includes('DB_MIGRATIONS_RUN'));
    const lines: string[] = [];
    const gw = await startGateway({ models: yaml, logLines: lines, env: { DB_MIGRATIONS_RUN: 'false' } });
    const keep = mkdtempSync(join(tmpdir(), 'hi-migrations-'));
    const dbPath = join(keep, 'kept.sqlite');
    try {
      expect(behind(lines)).toEqual([
        expect.objectContaining({ msg: expect.stringMatching(/migration\(s\) have not been applied .*npm run migration:run/) }),
      ]);
    } finally {
      await gw.close();
    }
    // Migrated once, then started with DB_MIGRATIONS_RUN=false: nothing to say.
    const migrated = await startGateway({ models: yaml, env: { DB_SQLITE_PATH: dbPath } });
    await migrated.close().catch(() => undefined);
    const quiet: string[] = [];
    const again = await startGateway({ models: yaml, logLines: quiet, env: { DB_MIGRATIONS_RUN: 'false', DB_SQLITE_PATH: dbPath } });
    await again.close();
    rmSync(keep, { recursive: true, force: true });
    expect(behind(quiet)).toEqual([]);
  });

  it('leaves no signal handler behind once its owner closes it', async () => {
    // Embedded (as in these tests), each gateway closed must give SIGTERM back; before, every one
    // left its handler, and a process that ran many held them all.
    const before = process.listenerCount('SIGTERM');
    for (let i = 0; i < 3; i++) {
      const gw = await startGateway({ models: 'models:\n  - id: a\n    context_length: 10\n    route: [{ kind: mock }]\n' });
      const open = process.listenerCount('SIGTERM');
      await gw.close();
      expect(open).toBe(before + 1);
    }
    expect(process.listenerCount('SIGTERM')).toBe(before);
  });

  it('gives back what its modules took when it fails to start', async () => {
    // A start refused after the modules' init (here by a bootstrap check) kept what they had
    // taken: the signal handlers, and the heap reclaimer's watch on every HTTP server of the
    // process, which adds a 'close' listener to each response. A process that went on after a
    // few such starts (the test suite) warned "11 close listeners added to [ServerResponse]".
    const server = createServer((_req, res) => res.end(String(res.listenerCount('close'))));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const closeListeners = async () => Number(await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)).text());
    try {
      const before = { sigterm: process.listenerCount('SIGTERM'), close: await closeListeners() };
      const refused = `
models:
  - id: emb/wrong
    type: embedding
    context_length: 10
    route: [{ kind: deepseek, base_url: "http://127.0.0.1:9/v1", provider_model_id: x }]
`;
      for (let i = 0; i < 3; i++) await expect(boot(refused)).rejects.toThrow(/emb\/wrong.*cannot compute embeddings/);
      expect({ sigterm: process.listenerCount('SIGTERM'), close: await closeListeners() }).toEqual(before);
    } finally {
      await new Promise((r) => server.close(r));
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
    // The line of the key itself (4), not of the model's `- id:`.
    await expect(boot(yaml)).rejects.toThrow(
      /models\.yaml:4 \(models\[0\]\.router\): router "telepathy" is unknown \(known: .*weighted.*\)/,
    );
    await expect(
      boot('models:\n  - id: a\n    context_length: 10\n    route: [{ kind: mock }]\n', {}, '# default\nrouting_strategy: dice\n'),
    ).rejects.toThrow(/routing\.yaml:2 \(routing_strategy\): routing_strategy "dice" is unknown/);
  });

  it('refuses an expected_completion_tokens that is not a count, whatever the strategy (provider.sort: price reads it)', async () => {
    const yaml = (router: string) =>
      `models:\n  - id: a\n    context_length: 10\n    router: ${router}\n    router_params: { expected_completion_tokens: lots }\n    route: [{ kind: mock }]\n`;
    for (const router of ['cost', 'weighted'])
      await expect(boot(yaml(router))).rejects.toThrow(/router_params\.expected_completion_tokens must be a whole number above 0/);
  });

  it('refuses a text route option of another type, which would have been taken for unset', async () => {
    const yaml = (option: string) =>
      `models:\n  - id: a\n    context_length: 10\n    route:\n      - { kind: anthropic, api_key: k, ${option} }\n`;
    await expect(boot(yaml('anthropic_beta: true'))).rejects.toThrow(
      /route\[0\]\): anthropic_beta must be a string \(or a list of strings\)/,
    );
    await expect(boot(yaml('anthropic_beta: { a: 1 }'))).rejects.toThrow(/anthropic_beta must be a string/);
    // A list of betas is what one naturally writes: taken, joined with commas.
    const gw = await boot(yaml('anthropic_beta: [a-2025-01-01, b-2025-02-02]'));
    await gw.close();
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
    // A path that cannot be made (through a file): the variable to fix, not a bare ENOTDIR.
    const underFile = (name: string) => `${__filename}/${name}`;
    await expect(boot('models: []\n', { DB_SQLITE_PATH: underFile('x.sqlite') })).rejects.toThrow(
      /^DB_SQLITE_PATH=.*x\.sqlite: cannot create/,
    );
    await expect(boot('models: []\n', { REQUEST_LOG_SPOOL_DIR: underFile('spool') })).rejects.toThrow(
      /^REQUEST_LOG_SPOOL_DIR=.*spool: cannot create/,
    );
  });
});
