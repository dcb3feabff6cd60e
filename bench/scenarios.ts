// What the benchmarks send and where: the gateway's model config pointing at the stand-in, the
// gateway's environment, and the request bodies of every scenario, for the stand-in directly
// and through the gateway. Shared by run.ts (the full benchmark) and ab.ts (A/B of two builds).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type Scenario = 'json' | 'stream' | 'paced' | 'lockstep';

/** One target's address and the body (or bodies, taken in turn) of every scenario. */
export interface Bodies extends Record<Scenario, string | string[]> {
  url: string;
  path: string;
}

const route = (port: number, model: string) =>
  `      - { kind: openai_compat, id: standin, base_url: "http://127.0.0.1:${port}/v1", provider_model_id: "${model}" }`;
const model = (id: string, port: number, upstreamModel: string) =>
  [
    `  - id: ${id}`,
    '    context_length: 8192',
    '    pricing: { prompt: "0.10", completion: "0.20" }',
    '    route:',
    route(port, upstreamModel),
  ].join('\n');

/** Writes `models.yaml` (every bench model served by the stand-in) into `dir`; returns its path. */
export function writeBenchModels(dir: string, upstreamPort: number): string {
  const file = join(dir, 'models.yaml');
  const models = [
    model('bench/echo', upstreamPort, 'ok'),
    model('bench/stream', upstreamPort, 'tokens:20'),
    model('bench/paced', upstreamPort, 'paced:20:20'),
    model('bench/paced30', upstreamPort, 'paced:30:20'),
  ];
  writeFileSync(file, `models:\n${models.join('\n')}\n`);
  return file;
}

/**
 * A gateway's environment as in production, everything on: JSON logs, metrics, the request log
 * (SQLite in `work`, or the local PostgreSQL with BENCH_DB=postgres). `name` keeps the files of
 * several gateways apart.
 */
export function gatewayEnv(work: string, name: string, extra: Record<string, string> = {}): Record<string, string> {
  const db: Record<string, string> =
    process.env.BENCH_DB === 'postgres'
      ? { DB_BACKEND: 'postgres', DATABASE_URL: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test' }
      : { DB_BACKEND: 'sqlite', DB_SQLITE_PATH: join(work, `${name}.sqlite`) };
  return {
    HOST: '127.0.0.1',
    NODE_ENV: 'production',
    LOG_LEVEL: 'info',
    METRICS_ENABLED: 'true',
    MODELS_CONFIG_PATH: join(work, 'models.yaml'),
    ROUTING_CONFIG_PATH: join(work, 'none.yaml'),
    REQUEST_LOG_SPOOL_DIR: join(work, `spool-${name}`),
    ...db,
    ...extra,
  };
}

const json = (model: string) =>
  JSON.stringify({ model, messages: [{ role: 'user', content: 'Say hello to the benchmark.' }], max_tokens: 64 });
const stream = (model: string, maxTokens?: number) =>
  JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'Say hello to the benchmark.' }], max_tokens: maxTokens });
/**
 * Answers of 10 to 30 tokens (20 on average), taken in turn: streams that end at different times;
 * with `tokens`, every answer that long.
 */
const varied = (model: string, tokens?: number) => (tokens ? [tokens] : [10, 15, 20, 25, 30]).map((n) => stream(model, n));

// Upstream model names are stand-in scenarios: `ok` answers at once; `tokens:20` streams 20
// tokens at once; `paced:20:20` sends the first token at once and then one every 20 ms (the
// stand-in stops at max_tokens, so `paced:30:20` with max_tokens 10-30 varies the length).

function bodies(port: number, models: Record<Scenario, string>, pacedTokens?: number): Bodies {
  return {
    url: `http://127.0.0.1:${port}`,
    path: '/v1/chat/completions',
    json: json(models.json),
    stream: stream(models.stream),
    paced: varied(models.paced, pacedTokens),
    lockstep: stream(models.lockstep),
  };
}

/** The stand-in (or the pass-through in front of it) addressed directly. */
export const directBodies = (port: number, pacedTokens?: number): Bodies =>
  bodies(port, { json: 'ok', stream: 'tokens:20', paced: 'paced:30:20', lockstep: 'paced:20:20' }, pacedTokens);

/** A gateway serving the models of `writeBenchModels`. */
export const gatewayBodies = (port: number, pacedTokens?: number): Bodies =>
  bodies(port, { json: 'bench/echo', stream: 'bench/stream', paced: 'bench/paced30', lockstep: 'bench/paced' }, pacedTokens);

/** Paced streams start one by one over a stream's length (the lockstep scenario: all at once). */
export const staggerMsOf = (scenario: Scenario): number | undefined => (scenario === 'paced' ? 400 : undefined);

export function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
