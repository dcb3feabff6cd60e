import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NestExpressApplication } from '@nestjs/platform-express';
import OpenAI from 'openai';
import { createApp, type CreateAppOptions } from '../../src/app.factory';
import { generationId } from '../../src/gateway/request-record';
import { AppLogger } from '../../src/observability/app-logger';
import { DatabaseService } from '../../src/storage/database.service';
import { ApiLog } from '../../src/storage/entities/api-log.entity';
import { RequestLogWriter } from '../../src/storage/request-log.writer';

export interface GatewayOptions {
  /** models.yaml text. */
  models: string;
  /** routing.yaml text; none by default. */
  routing?: string;
  env?: Record<string, string | undefined>;
  /** More Nest modules for the app (e.g. an adapter module under test). */
  imports?: CreateAppOptions['imports'];
  /** Collects the app's log lines (JSON, at LOG_LEVEL, `warn` unless set) instead of dropping them. */
  logLines?: string[];
}

export interface TestGateway {
  app: NestExpressApplication;
  /** http://127.0.0.1:port */
  url: string;
  dir: string;
  client(options?: Partial<ConstructorParameters<typeof OpenAI>[0]>): OpenAI;
  /** Flushes the log writer and returns every api_logs row, oldest first. */
  rows(): Promise<ApiLog[]>;
  /** The row of the request a client saw as `gen-<id>` (the `id` of a response or chunk). */
  rowFor(generationId: string): Promise<ApiLog>;
  /** Waits until `n` rows are in the database. */
  waitForRows(n: number, timeoutMs?: number): Promise<ApiLog[]>;
  close(): Promise<void>;
}

/**
 * Boots the real gateway (same factory as main.ts) on a free port, with the given YAML and
 * environment, its SQLite file and spool in a temp directory unless the env says otherwise.
 */
export async function startGateway(opts: GatewayOptions): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'hi-test-'));
  writeFileSync(join(dir, 'models.yaml'), opts.models);
  if (opts.routing !== undefined) writeFileSync(join(dir, 'routing.yaml'), opts.routing);
  const env: Record<string, string | undefined> = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    MODELS_CONFIG_PATH: join(dir, 'models.yaml'),
    ROUTING_CONFIG_PATH: join(dir, 'routing.yaml'),
    DB_SQLITE_PATH: join(dir, 'gateway.sqlite'),
    REQUEST_LOG_SPOOL_DIR: join(dir, 'spool'),
    REQUEST_LOG_FLUSH_MS: '50',
    REQUEST_LOG_REPLAY_MS: '200',
    DB_CONNECT_TIMEOUT_MS: '10000',
    ...opts.env,
  };
  const lines = opts.logLines;
  const logger = lines
    ? new AppLogger(opts.env?.LOG_LEVEL ?? 'warn', { write: (line: string) => void lines.push(line) })
    : new AppLogger(env.LOG_LEVEL ?? 'silent');
  const app = await createApp({ overrides: env, envFile: false, logger, imports: opts.imports });
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as { port: number };
  const url = `http://127.0.0.1:${address.port}`;
  const writer = app.get(RequestLogWriter);
  const db = app.get(DatabaseService);

  const rows = async (): Promise<ApiLog[]> => {
    await writer.drain();
    const ds = db.dataSource;
    if (!ds) throw new Error('database not connected');
    return ds.getRepository(ApiLog).find({ order: { created_at: 'ASC' } });
  };

  return {
    app,
    url,
    dir,
    client: (options) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'test-key', maxRetries: 0, ...options }),
    rows,
    async rowFor(id) {
      const row = (await rows()).find((r) => generationId(r.id) === id);
      if (!row) throw new Error(`no api_logs row for ${id}`);
      return row;
    },
    async waitForRows(n, timeoutMs = 5000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const r = db.dataSource ? await rows() : [];
        if (r.length >= n) return r;
        if (Date.now() > until) throw new Error(`expected ${n} api_logs rows, found ${r.length}`);
        await new Promise((res) => setTimeout(res, 25));
      }
    },
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Collects a raw HTTP response body as text (for SSE details the SDK hides). */
export async function rawPost(
  url: string,
  body: unknown,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/**
 * POSTs `body` to `url` + `path` on a new connection, the request line and headers at once and
 * the body in `parts` pieces `gapMs` apart (cut by bytes: a piece may end inside a character's
 * UTF-8 sequence); the raw answer once the server closes (or answers a kept-alive connection),
 * how long that took, and how many pieces went out. A reset or broken pipe ends it like a close.
 */
export function trickle(url: string, path: string, body: string, parts: number, gapMs: number) {
  return new Promise<{ text: string; ms: number; sentParts: number }>((resolve, reject) => {
    const started = performance.now();
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    let text = '';
    let sent = 0;
    socket.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('\r\n\r\n') && !text.includes('connection: close')) socket.end(); // a kept-alive answer
    });
    socket.on('close', () => resolve({ text, ms: performance.now() - started, sentParts: sent }));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    const bytes = Buffer.from(body);
    socket.write(`POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${bytes.length}\r\n\r\n`);
    const size = Math.ceil(bytes.length / parts);
    const next = () => {
      if (sent >= parts || socket.destroyed) return;
      socket.write(bytes.subarray(sent * size, ++sent * size));
      setTimeout(next, gapMs).unref();
    };
    next();
  });
}

/** The JSON body of a raw HTTP answer. */
export const answerJson = (raw: string) => JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
