import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { ACCESS_ENV, ADMIN_TOKEN, clearRedisPrefix, REDIS_URL, redisPrefix } from '../helpers/access';
import { sweepStaleConfigCopies } from '../../src/cluster';
import { RequestLogWriter } from '../../src/storage/request-log.writer';
import { spawnGateway } from '../helpers/child-gateway';
import { startGateway } from '../helpers/gateway';
import { logRow } from '../helpers/log-row';

const MODELS = `
models:
  - id: demo/slow
    context_length: 4096
    route: [{ kind: mock, tokens: 20, tokens_per_second: 40 }]
`;

const streamBody = JSON.stringify({ model: 'demo/slow', stream: true, messages: [{ role: 'user', content: 'x' }] });

async function openStream(url: string, model = 'demo/slow'): Promise<{ first: string; rest: Promise<string> }> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: model === 'demo/slow' ? streamBody : streamBody.replace('demo/slow', model),
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const first = decoder.decode((await reader.read()).value);
  const rest = (async () => {
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += decoder.decode(value);
    }
  })();
  return { first, rest };
}

describe('graceful shutdown', () => {
  it('lets an open stream finish before closing', async () => {
    const gw = await startGateway({ models: MODELS, env: { SHUTDOWN_GRACE_MS: '10000' } });
    const stream = await openStream(gw.url);
    expect(stream.first).toContain('"role":"assistant"');
    const closing = gw.close();
    const text = await stream.rest;
    await closing;
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    await expect(fetch(`${gw.url}/health`)).rejects.toThrow(); // no longer accepting
  });

  it('cuts streams still open after the grace period with an in-band error', async () => {
    const gw = await startGateway({
      models: MODELS.replace('tokens_per_second: 40', 'tokens_per_second: 2'),
      env: { SHUTDOWN_GRACE_MS: '200' },
    });
    const stream = await openStream(gw.url);
    const app = gw.app;
    const closing = app.close();
    const text = await stream.rest;
    await closing;
    expect(text).toMatch(/"error":\{"message":"The gateway shut down before the answer was complete"/);
    expect(text).not.toContain('[DONE]');
  });
});

/** Every request-log row a closed gateway left: in its SQLite file and in its spool. */
function rowsLeft(dir: string): Array<{ id: string; status_code: number; stream: boolean | number }> {
  const db = new Database(join(dir, 'gateway.sqlite'), { readonly: true });
  const stored = db.prepare('SELECT id, status_code, stream FROM api_logs').all() as Array<{
    id: string;
    status_code: number;
    stream: number;
  }>;
  db.close();
  const spool = join(dir, 'spool');
  const spooled = existsSync(spool)
    ? readdirSync(spool)
        .filter((f) => f.endsWith('.jsonl'))
        .flatMap((f) => readFileSync(join(spool, f), 'utf8').split('\n').filter(Boolean))
        .map((l) => JSON.parse(l) as { id: string; status_code: number; stream: boolean })
    : [];
  return [...stored, ...spooled];
}

/** A raw connection that has sent a request's headers and the first half of its body. */
async function halfSent(url: string, body: string): Promise<{ socket: Socket; rest: () => void; received: () => string }> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  await once(socket, 'connect');
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString()));
  socket.on('error', () => undefined);
  const half = Math.floor(body.length / 2);
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, half)}`,
  );
  await new Promise((r) => setTimeout(r, 100)); // the server has the headers and half the body
  return { socket, rest: () => socket.write(body.slice(half)), received: () => text };
}

describe('shutdown and requests whose body is still arriving', () => {
  it('waits for the body; the request is refused with 503, its connection closed, and logged', async () => {
    const gw = await startGateway({ models: MODELS, env: { SHUTDOWN_GRACE_MS: '5000' } });
    const upload = await halfSent(gw.url, streamBody);
    const closing = gw.app.close();
    await new Promise((r) => setTimeout(r, 200));
    const closed = once(upload.socket, 'close');
    upload.rest();
    await closing;
    await closed; // the answer closes its connection
    expect(upload.received()).toMatch(/^HTTP\/1\.1 503 /);
    expect(upload.received()).toMatch(/\r\nconnection: close\r\n/i);
    const rows = rowsLeft(gw.dir);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status_code: 503 });
    expect(Boolean(rows[0].stream)).toBe(true);
    upload.socket.destroy();
    rmSync(gw.dir, { recursive: true, force: true });
  });

  it('logs one cut at the end of the grace period', async () => {
    const gw = await startGateway({ models: MODELS, env: { SHUTDOWN_GRACE_MS: '300' } });
    const upload = await halfSent(gw.url, streamBody);
    await gw.app.close();
    const rows = rowsLeft(gw.dir);
    expect(rows).toHaveLength(1);
    expect([499, 503]).toContain(rows[0].status_code);
    upload.socket.destroy();
    rmSync(gw.dir, { recursive: true, force: true });
  });

  it('spools a row that comes after the request log was drained, rather than dropping it', async () => {
    const gw = await startGateway({ models: MODELS });
    const writer = gw.app.get(RequestLogWriter);
    await gw.app.close();
    writer.enqueue(logRow('late-1'));
    expect(rowsLeft(gw.dir).map((r) => r.id)).toEqual(['late-1']);
    rmSync(gw.dir, { recursive: true, force: true });
  });

  it('does not wait out the grace period for a connection that never sent a byte (a load balancer TCP check)', async () => {
    const gw = await startGateway({ models: MODELS, env: { SHUTDOWN_GRACE_MS: '10000' } });
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    const closed = once(socket, 'close');
    const started = performance.now();
    await gw.close();
    expect(performance.now() - started).toBeLessThan(3000);
    await closed;
  });

  it('says Connection: close on an answer begun before the drain and sent during it, and on a stream whose client asked', async () => {
    const gw = await startGateway({
      models: `${MODELS}  - id: demo/late
    context_length: 4096
    route: [{ kind: mock, tokens: 3, ttft_ms: 800 }]
`,
      env: { SHUTDOWN_GRACE_MS: '10000' },
    });
    const raw = (body: string, connection: string) =>
      new Promise<string>((resolveText) => {
        const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
        let text = '';
        socket.on('data', (d: Buffer) => (text += d.toString()));
        socket.on('close', () => resolveText(text));
        socket.on('error', () => undefined);
        socket.write(
          `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: ${connection}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
      });
    // A stream whose client said close: the server says close, and closes after [DONE].
    const asked = await raw(streamBody.replace('demo/slow', 'demo/late'), 'close');
    expect(asked).toMatch(/^HTTP\/1\.1 200/);
    expect(asked.toLowerCase()).toContain('connection: close');
    expect(asked).toContain('data: [DONE]');
    // A one-shot answer under way when the drain begins.
    const oneShot = raw(JSON.stringify({ model: 'demo/late', messages: [{ role: 'user', content: 'x' }] }), 'keep-alive');
    await new Promise((r) => setTimeout(r, 300));
    const closing = gw.close();
    const answer = await oneShot;
    await closing;
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(answer.toLowerCase()).toContain('connection: close');
    expect(answer.toLowerCase()).not.toContain('keep-alive');
  });

  it('closes the connection of an answer that ends while another request keeps the drain going', async () => {
    const gw = await startGateway({
      models: `${MODELS}  - id: demo/slower\n    context_length: 4096\n    route: [{ kind: mock, tokens: 20, tokens_per_second: 6 }]\n`,
      env: { SHUTDOWN_GRACE_MS: '10000' },
    });
    const long = await openStream(gw.url, 'demo/slower'); // keeps the drain going for ~3 s
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    const closed = once(socket, 'close');
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${streamBody.length}\r\n\r\n${streamBody}`,
    );
    while (!text.includes('"role":"assistant"')) await new Promise((r) => setTimeout(r, 10));
    const closing = gw.app.close();
    // This stream ends (about 0.5 s) while the other goes on; its connection, whose answer said
    // keep-alive before the drain began, is closed then, not only at the end of the drain.
    const ended = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 2000))]);
    expect(text).toContain('data: [DONE]');
    expect(ended).toBe('closed');
    expect(await long.rest).toContain('data: [DONE]');
    await closing;
    expect(rowsLeft(gw.dir)).toHaveLength(2);
    rmSync(gw.dir, { recursive: true, force: true });
  });
});

describe('the built server on SIGTERM', () => {
  it('finishes the open stream, writes its log row and exits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hi-sigterm-'));
    writeFileSync(join(dir, 'models.yaml'), MODELS);
    const sqlite = join(dir, 'gw.sqlite');
    const { child, url } = await spawnGateway(dir, {
      MODELS_CONFIG_PATH: join(dir, 'models.yaml'),
      ROUTING_CONFIG_PATH: join(dir, 'none.yaml'),
      DB_SQLITE_PATH: sqlite,
      REQUEST_LOG_SPOOL_DIR: join(dir, 'spool'),
      DB_BACKEND: 'sqlite',
      DATABASE_URL: '',
    });
    const exited = new Promise<number | string | null>((r) => child.on('exit', (code, signal) => r(code ?? signal)));
    const stream = await openStream(url);
    child.kill('SIGTERM');
    // A config manager's SIGHUP during the shutdown (here, one every few milliseconds until the
    // exit) neither reloads nor ends the process before its log is written.
    const hups = setInterval(() => child.exitCode === null && child.signalCode === null && child.kill('SIGHUP'), 3);
    void exited.finally(() => clearInterval(hups));
    const text = await stream.rest;
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    // Nest closes the app (the stream above finished, the row below is written), then raises
    // the signal again so the exit says why it stopped; a crash would exit with code 1.
    expect(await exited).toBe('SIGTERM');
    const db = new Database(sqlite, { readonly: true });
    try {
      const rows = db.prepare('SELECT model, status_code, completion_tokens FROM api_logs').all();
      expect(rows).toEqual([{ model: 'demo/slow', status_code: 200, completion_tokens: 20 }]);
    } finally {
      db.close();
    }
  });
});

/** A port nothing listens on now (the OS's pick, let go at once). */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

describe('the built server with WORKERS=2', () => {
  const main = resolve(__dirname, '../../dist/main.js');
  /** Gateways a failed test left running (its workers exit with the primary). */
  const running = new Set<ChildProcess>();
  afterEach(() => {
    for (const child of running) child.kill('SIGKILL');
    running.clear();
  });

  function launch(dir: string, env: Record<string, string | undefined>) {
    return spawn(process.execPath, [main], {
      cwd: dir,
      env: {
        ...process.env,
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
        MODELS_CONFIG_PATH: join(dir, 'models.yaml'),
        ROUTING_CONFIG_PATH: join(dir, 'none.yaml'),
        DB_SQLITE_PATH: join(dir, 'gw.sqlite'),
        REQUEST_LOG_SPOOL_DIR: join(dir, 'spool'),
        DB_BACKEND: 'sqlite',
        DATABASE_URL: '',
        WORKERS: '2',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** Launches the gateway in `dir` and waits until its output says `ready`; the port is the one the OS gave. */
  async function started(dir: string, env: Record<string, string | undefined>, ready: RegExp) {
    if (!existsSync(main)) throw new Error('dist/main.js is missing: run `npm run build` first (npm test does)');
    const child = launch(dir, { PORT: '0', ...env });
    running.add(child);
    const exited = new Promise<number | string | null>((r) =>
      child.on('exit', (code, signal) => {
        running.delete(child);
        r(code ?? signal);
      }),
    );
    const proc = { dir, port: 0, child, exited, output: '' };
    child.stdout.on('data', (b: Buffer) => (proc.output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (proc.output += b.toString()));
    const until = Date.now() + 20_000;
    while (!ready.test(proc.output)) {
      if (Date.now() > until) {
        child.kill('SIGKILL');
        throw new Error(`gateway did not start (waited for ${ready}):\n${proc.output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    proc.port = Number(/listening on http:\/\/[^:]+:(\d+)/.exec(proc.output)?.[1]);
    return proc;
  }

  /** Starts a two-worker gateway on these models and waits until both workers serve. */
  async function startCluster(models: string, prefix: string, env: Record<string, string | undefined> = {}) {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    writeFileSync(join(dir, 'models.yaml'), models);
    return started(dir, env, /2 workers serving/);
  }

  it('serves from two processes, sums their metrics, and drains both on SIGTERM', async () => {
    const cluster = await startCluster(MODELS.replace('tokens: 20, tokens_per_second: 40', 'tokens: 3'), 'hi-cluster-');
    const { dir, port, child, exited } = cluster;
    const url = `http://127.0.0.1:${port}`;
    const pids = new Set<string>();
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        // A fresh connection each time, so the primary spreads them over the workers.
        const res = await fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', connection: 'close' },
          body: JSON.stringify({ model: 'demo/slow', messages: [{ role: 'user', content: 'x' }] }),
        });
        expect(res.status).toBe(200);
        await res.text();
      }),
    );
    for (const m of cluster.output.matchAll(/worker (\d+) listening/g)) pids.add(m[1]);
    expect(pids.size).toBe(2);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/hybridinference_requests_total\{model="demo\/slow",provider="mock",status="200"\} 40\b/);
    child.kill('SIGTERM');
    // SIGHUPs during the stop are not passed on to draining workers, nor end the primary.
    const hups = setInterval(() => child.exitCode === null && child.signalCode === null && child.kill('SIGHUP'), 3);
    void exited.finally(() => clearInterval(hups));
    expect(await exited).toBe(0);
    const db = new Database(join(dir, 'gw.sqlite'), { readonly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM api_logs').get()).toEqual({ n: 40 });
    } finally {
      db.close();
    }
  });

  it('finishes the open stream and writes its row when the primary process is killed', async () => {
    const configDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('hybridinference-config-'));
    const before = new Set(configDirs());
    const cluster = await startCluster(
      MODELS.replace('tokens: 20, tokens_per_second: 40', 'tokens: 20, tokens_per_second: 10'),
      'hi-orphan-',
    );
    const { dir, port, child, exited } = cluster;
    const workerPids = [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));
    expect(workerPids).toHaveLength(2);
    const stream = await openStream(`http://127.0.0.1:${port}`);
    child.kill('SIGKILL'); // the primary only (an out-of-memory kill)
    expect(await exited).toBe('SIGKILL');
    // Node's default was the workers' exit at once: the stream cut without an error, its row lost.
    const text = await stream.rest;
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (const until = Date.now() + 20_000; workerPids.some(alive) && Date.now() < until;) await new Promise((r) => setTimeout(r, 100));
    expect(workerPids.filter(alive)).toEqual([]);
    const db = new Database(join(dir, 'gw.sqlite'), { readonly: true });
    try {
      expect(db.prepare('SELECT model, status_code, completion_tokens FROM api_logs').all()).toEqual([
        { model: 'demo/slow', status_code: 200, completion_tokens: 20 },
      ]);
    } finally {
      db.close();
    }
    // Its private copy of the accepted config, left behind, is the next primary's to remove.
    const left = configDirs().filter((n) => !before.has(n));
    expect(left).toEqual([expect.stringMatching(new RegExp(`^hybridinference-config-${child.pid}-`))]);
    expect(sweepStaleConfigCopies()).toContain(join(tmpdir(), left[0]));
    expect(existsSync(join(tmpdir(), left[0]))).toBe(false);
  });

  it('closes connections past MAX_CONNECTIONS in each worker, counts them, and serves again once they close', async () => {
    // Node's own maxConnections, under node:cluster, handed each connection past it back and forth
    // between the workers for as long as it stayed open: never closed, never counted, CPU burnt.
    const cluster = await startCluster(MODELS, 'hi-cluster-cap-', { MAX_CONNECTIONS: '2' });
    const { port, child, exited } = cluster;
    const silent: Socket[] = [];
    const opened = () =>
      new Promise<Socket>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      });
    /** How a new connection fares: answered, or closed unanswered (how soon). */
    const fate = () =>
      new Promise<{ answered: boolean; ms: number }>((resolve) => {
        const started = Date.now();
        const s = connect(port, '127.0.0.1', () => s.write('GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'));
        let text = '';
        s.on('data', (b: Buffer) => (text += b.toString()));
        s.on('error', () => undefined);
        s.on('close', () => resolve({ answered: text.startsWith('HTTP/1.1 200'), ms: Date.now() - started }));
        setTimeout(() => s.destroy(), 5000).unref();
      });
    try {
      // Two places in each worker. The primary hands a connection to a worker that has taken the
      // last one, not strictly in turn (one may get three of four while the other acknowledges):
      // six silent connections fill both whatever the order, the ones past the cap closed.
      for (let i = 0; i < 6; i++) silent.push(await opened());
      await new Promise((r) => setTimeout(r, 300));
      const refused = await fate();
      expect(refused).toMatchObject({ answered: false });
      expect(refused.ms).toBeLessThan(2000);
      for (const s of silent.splice(0)) s.destroy();
      await new Promise((r) => setTimeout(r, 300));
      expect(await fate()).toMatchObject({ answered: true });
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(Number(/^hybridinference_connections_dropped_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
      expect(cluster.output).toMatch(/client connection\(s\) closed unanswered/);
    } finally {
      for (const s of silent) s.destroy();
      child.kill('SIGTERM');
      await exited;
    }
  }, 60_000);

  it('stops on SIGTERM while a crashed worker waits to be replaced, and starts no new one', async () => {
    const cluster = await startCluster(MODELS, 'hi-cluster-crash-');
    const { port, child, exited } = cluster;
    // Streams in flight on both workers: the survivor takes a while to drain them.
    const streams = Array.from({ length: 6 }, () =>
      fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ model: 'demo/slow', stream: true, messages: [{ role: 'user', content: 'x' }] }),
      })
        .then((r) => r.text())
        .catch(() => ''),
    );
    await new Promise((r) => setTimeout(r, 150));
    const pids = [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));
    process.kill(pids[0], 'SIGKILL');
    while (!cluster.output.includes('restarting in')) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGTERM'); // within the replacement's 250 ms backoff
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    if (code === 'still running') {
      for (const m of cluster.output.matchAll(/worker (\d+) listening/g))
        if (!pids.includes(Number(m[1]))) process.kill(Number(m[1]), 'SIGKILL');
      child.kill('SIGKILL');
    }
    await Promise.all(streams);
    expect(code).toBe(0);
    expect([...cluster.output.matchAll(/worker (\d+) listening/g)]).toHaveLength(2);
  }, 30_000);

  it('replaces every worker that died, also two at once', async () => {
    const cluster = await startCluster(MODELS, 'hi-cluster-both-');
    const pids = [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    // A second death used to cancel the first one's pending restart: one worker for good.
    const until = Date.now() + 15_000;
    while ([...cluster.output.matchAll(/worker (\d+) listening/g)].length < 4 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 50));
    expect([...cluster.output.matchAll(/worker (\d+) listening/g)]).toHaveLength(4);
    // (PORT=0 here: with every worker gone the shared port closed, and the new ones drew another.)
    const port = [...cluster.output.matchAll(/listening on http:\/\/[^:]+:(\d+)/g)].at(-1)![1];
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    expect(res.status).toBe(200);
    cluster.child.kill('SIGTERM');
    expect(await cluster.exited).toBe(0);
  }, 30_000);

  it('starts a replacement on the config the workers accepted, not on a file a reload refused', async () => {
    const cluster = await startCluster(MODELS, 'hi-cluster-refused-');
    const listening = () => [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));
    const [first] = listening();
    writeFileSync(join(cluster.dir, 'models.yaml'), `${MODELS}  - id: [broken\n`);
    cluster.child.kill('SIGHUP');
    for (const until = Date.now() + 10_000; (cluster.output.match(/the old one stays/g) ?? []).length < 2 && Date.now() < until;)
      await new Promise((r) => setTimeout(r, 50));
    expect((cluster.output.match(/the old one stays/g) ?? []).length).toBe(2);
    process.kill(first, 'SIGKILL');
    // It read the broken file and exited, again and again; its replacement now serves the old config.
    for (const until = Date.now() + 10_000; listening().length < 3 && Date.now() < until;) await new Promise((r) => setTimeout(r, 50));
    expect(listening()).toHaveLength(3);
    const afterKill = cluster.output.slice(cluster.output.indexOf('exited (SIGKILL)'));
    expect(afterKill).not.toMatch(/failed to start|YAML syntax error|exited \(1\)/);
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`http://127.0.0.1:${cluster.port}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ model: 'demo/slow', messages: [{ role: 'user', content: 'x' }] }),
      });
      expect(res.status).toBe(200);
      await res.text();
    }
    cluster.child.kill('SIGTERM');
    expect(await cluster.exited).toBe(0);
  }, 30_000);

  it('kills a worker that does not stop within the deadline, rather than waiting for ever', async () => {
    const cluster = await startCluster(MODELS, 'hi-cluster-stuck-', { SHUTDOWN_GRACE_MS: '500', DB_QUERY_TIMEOUT_MS: '500' });
    const [pid] = [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));
    process.kill(pid, 'SIGSTOP'); // hung: it cannot even hear SIGTERM
    try {
      cluster.child.kill('SIGTERM');
      // Deadline: grace 0.5 s + query timeout 0.5 s + 15 s.
      const code = await Promise.race([cluster.exited, new Promise((r) => setTimeout(() => r('still running'), 25_000))]);
      expect(code).toBe(1);
      expect(cluster.output).toMatch(/1 workers did not stop within 16000 ms; killing them/);
    } finally {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }, 40_000);

  it('answers /metrics with the workers that answer while one is stopped or restarting', async () => {
    const cluster = await startCluster(MODELS.replace('tokens: 20, tokens_per_second: 40', 'tokens: 3'), 'hi-cluster-metrics-');
    const url = `http://127.0.0.1:${cluster.port}`;
    const scrape = async (signal?: AbortSignal) => {
      const res = await fetch(`${url}/metrics`, { headers: { connection: 'close' }, signal });
      return { status: res.status, text: await res.text() };
    };
    const answered = (n: number) => `hybridinference_metrics_workers{state="answered"} ${n}`;
    const missing = (n: number) => `hybridinference_metrics_workers{state="missing"} ${n}`;
    const survivorsMetrics = 'hybridinference_process_cpu_user_seconds_total';
    // Requests served, summed over the cluster: a counter, which must never go back.
    const served = (text: string) =>
      [...text.matchAll(/^hybridinference_requests_total\{[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    for (let i = 0; i < 6; i++)
      await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ model: 'demo/slow', messages: [{ role: 'user', content: 'x' }] }),
      }).then((r) => r.text());
    const before = await scrape();
    expect(before.status).toBe(200);
    expect(served(before.text)).toBe(6);
    const [victim] = [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));

    // Stopped (SIGSTOP: hung, or paused by a debugger). The primary gives a connection only to a
    // worker that took the last one it was given, so of two scrapes at most one waits on the
    // stopped worker.
    process.kill(victim, 'SIGSTOP');
    try {
      const pending = new AbortController();
      const stopped = await Promise.any([scrape(pending.signal), scrape(pending.signal)]);
      pending.abort();
      expect(stopped.status).toBe(200);
      expect(stopped.text).toContain(survivorsMetrics);
      expect(stopped.text).toContain(missing(1));
      // The stopped worker counts with its last figures.
      expect(served(stopped.text)).toBe(6);
    } finally {
      process.kill(victim, 'SIGCONT');
    }

    // Killed, then replaced: the replacement is asked nothing until it listens.
    process.kill(victim, 'SIGKILL');
    while (!cluster.output.includes('restarting in')) await new Promise((r) => setTimeout(r, 10));
    const restarting: Array<{ status: number; text: string }> = [];
    while ([...cluster.output.matchAll(/worker \d+ listening/g)].length < 3) restarting.push(await scrape());
    expect(restarting.map((r) => r.status)).toEqual(restarting.map(() => 200));
    expect(restarting.every((r) => r.text.includes(survivorsMetrics))).toBe(true);
    // (The last ones may already count the replacement: it listens a moment before it says so.)
    expect(restarting[0].text).toContain(answered(1));
    const after = await scrape();
    expect(after.text).toContain(answered(2));
    // The killed worker's requests still count; its replacement starts from zero.
    for (const r of [...restarting, after]) expect(served(r.text)).toBe(6);

    cluster.child.kill('SIGTERM');
    expect(await cluster.exited).toBe(0);
  }, 60_000);

  it('keeps serving when a worker dies while the primary gathers its /metrics', async () => {
    const cluster = await startCluster(MODELS.replace('tokens: 20, tokens_per_second: 40', 'tokens: 3'), 'hi-cluster-metrics-death-');
    const url = `http://127.0.0.1:${cluster.port}`;
    const listening = () => [...cluster.output.matchAll(/worker (\d+) listening/g)].map((m) => Number(m[1]));
    const [stopped, asking] = listening();
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // One worker stopped: the primary waits for its figures (up to 2 s) before it answers the other.
    process.kill(stopped, 'SIGSTOP');
    const pending = new AbortController();
    try {
      // Fresh connections go to the workers in turn: one of these reaches the running worker.
      const scrapes = [0, 1].map(() =>
        fetch(`${url}/metrics`, { headers: { connection: 'close' }, signal: pending.signal }).catch(() => undefined),
      );
      await pause(500);
      // The asking worker dies while the primary still waits; its answer then has nowhere to go.
      process.kill(asking, 'SIGKILL');
      await pause(2500);
      pending.abort();
      await Promise.all(scrapes);
    } finally {
      process.kill(stopped, 'SIGCONT');
    }
    // The primary lived: it replaced the worker, and the gateway answers.
    const until = Date.now() + 10_000;
    while (listening().length < 3 && Date.now() < until) await pause(50);
    expect(cluster.output).not.toContain('ERR_IPC_CHANNEL_CLOSED');
    expect(listening()).toHaveLength(3);
    expect((await fetch(`${url}/metrics`, { headers: { connection: 'close' } })).status).toBe(200);
    cluster.child.kill('SIGTERM');
    expect(await cluster.exited).toBe(0);
  }, 30_000);

  it('stops admitting a key revoked on one worker on every worker, long before the cache would forget it', async () => {
    // Ten minutes: a worker that was not told would admit the key for the rest of the test.
    const cluster = await startCluster(MODELS.replace('tokens: 20, tokens_per_second: 40', 'tokens: 3'), 'hi-cluster-keys-', {
      ...ACCESS_ENV,
      API_KEY_CACHE_TTL_MS: '600000',
      REDIS_URL: undefined,
    });
    const url = `http://127.0.0.1:${cluster.port}`;
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', connection: 'close' };
    const created = await fetch(`${url}/admin/api-keys`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'revoked' }) });
    expect(created.status).toBe(201);
    const { id, key } = (await created.json()) as { id: string; key: string };
    // A fresh connection each time: the primary hands connections to the workers in turn
    // (round-robin, Node's default off Windows), so each of these sequences reaches both.
    const statuses = async (n: number) => {
      const seen: number[] = [];
      for (let i = 0; i < n; i++) {
        const res = await fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', connection: 'close' },
          body: JSON.stringify({ model: 'demo/slow', messages: [{ role: 'user', content: 'x' }] }),
        });
        await res.text();
        seen.push(res.status);
      }
      return seen;
    };
    expect(await statuses(6)).toEqual([200, 200, 200, 200, 200, 200]); // both workers hold the key now
    const revoked = await fetch(`${url}/admin/api-keys/${id}/revoke`, { method: 'POST', headers: admin });
    expect(revoked.status).toBe(200);
    // The other worker hears of it through the primary a moment after the answer above: a few
    // seconds at most, where the cache alone would take ten minutes.
    const until = Date.now() + 5000;
    while ((await statuses(2)).some((s) => s !== 401) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(await statuses(10)).toEqual(Array.from({ length: 10 }, () => 401));
    cluster.child.kill('SIGTERM');
    expect(await cluster.exited).toBe(0);
  }, 60_000);

  it('writes its last log lines before it exits on SIGTERM, every time, alone or as workers', async () => {
    // The request log writer's "drained" line is among the last a process logs. Lost at random
    // (1 stop in 3 to 5) when the process died with it still in pino's asynchronous destination:
    // several stops make that show.
    const stopped = async (proc: Awaited<ReturnType<typeof started>>) => {
      const closed = new Promise((r) => proc.child.once('close', r)); // stdout read to its end
      proc.child.kill('SIGTERM');
      await closed;
      return [...proc.output.matchAll(/"context":"RequestLogWriter","msg":"drained: /g)].length;
    };
    const dir = mkdtempSync(join(tmpdir(), 'hi-last-lines-'));
    writeFileSync(join(dir, 'models.yaml'), MODELS);
    const drained: number[] = [];
    for (let i = 0; i < 6; i++) drained.push(await stopped(await started(dir, { WORKERS: '1' }, /HybridInference listening/)));
    for (let i = 0; i < 3; i++) drained.push(await stopped(await started(dir, {}, /2 workers serving/)));
    expect(drained).toEqual([1, 1, 1, 1, 1, 1, 2, 2, 2]);
  }, 120_000);

  it('takes WORKERS from .env, and a WORKERS set in the environment over it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hi-cluster-dotenv-'));
    writeFileSync(join(dir, 'models.yaml'), MODELS);
    writeFileSync(join(dir, '.env'), 'WORKERS=2\n');
    const fromFile = await started(dir, { WORKERS: undefined }, /2 workers serving/);
    expect([...fromFile.output.matchAll(/worker \d+ listening/g)]).toHaveLength(2);
    fromFile.child.kill('SIGTERM');
    expect(await fromFile.exited).toBe(0);

    const fromEnv = await started(dir, { WORKERS: '1' }, /HybridInference listening/);
    expect(fromEnv.output).not.toMatch(/worker \d+ listening|workers serving/);
    fromEnv.child.kill('SIGTERM');
    expect(await fromEnv.exited).toBe('SIGTERM');
  }, 60_000);

  it("takes LOG_LEVEL from .env for the workers' logs and the primary's own", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hi-cluster-loglevel-'));
    writeFileSync(join(dir, 'models.yaml'), MODELS);
    writeFileSync(join(dir, '.env'), 'LOG_LEVEL=warn\n');
    // "2 workers serving" is info, so a port of our choosing tells when they serve; the warning
    // about WORKERS without REDIS_URL shows at warn.
    const port = await freePort();
    const quiet = await started(dir, { LOG_LEVEL: undefined, REDIS_URL: '', PORT: String(port) }, /without REDIS_URL/);
    const until = Date.now() + 20_000;
    while (
      !(await fetch(`http://127.0.0.1:${port}/health`).then(
        (r) => r.ok,
        () => false,
      ))
    ) {
      if (Date.now() > until) throw new Error(`gateway did not serve:\n${quiet.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    quiet.child.kill('SIGTERM');
    expect(await quiet.exited).toBe(0);
    const lines = quiet.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: string; context?: string; msg: string });
    expect(lines.filter((l) => l.level === 'info')).toEqual([]);
    expect(lines.filter((l) => l.context === 'Cluster').map((l) => l.msg)).toEqual([expect.stringMatching(/^WORKERS=2 without REDIS_URL/)]);
  }, 60_000);

  it('reports a worker that died even at LOG_LEVEL=error: the only trace of one the OOM killer ended', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hi-cluster-errors-'));
    writeFileSync(join(dir, 'models.yaml'), MODELS);
    const port = await freePort();
    const child = launch(dir, { LOG_LEVEL: 'error', REDIS_URL: '', PORT: String(port) });
    running.add(child);
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    const exited = new Promise((r) => child.on('exit', r));
    const until = Date.now() + 20_000;
    while (
      !(await fetch(`http://127.0.0.1:${port}/health`).then(
        (r) => r.ok,
        () => false,
      ))
    ) {
      if (Date.now() > until) throw new Error(`gateway did not serve:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const workers = execFileSync('pgrep', ['-P', String(child.pid)])
      .toString()
      .trim()
      .split('\n')
      .map(Number);
    process.kill(workers[0], 'SIGKILL');
    while (!output.includes('restarting in') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(output).toMatch(new RegExp(`"level":"error".*worker ${workers[0]} exited \\(SIGKILL\\); restarting in`));
    child.kill('SIGTERM');
    await exited;
  }, 60_000);

  it('warns at start that without REDIS_URL every worker counts limits and budgets on its own', async () => {
    const warning = /"level":"warn".*"msg":"WORKERS=2 without REDIS_URL: .*up to 2 times each limit and budget/;
    const alone = await startCluster(MODELS, 'hi-cluster-noredis-', { REDIS_URL: undefined });
    expect(alone.output).toMatch(warning);
    alone.child.kill('SIGTERM');
    expect(await alone.exited).toBe(0);

    const prefix = redisPrefix();
    try {
      const shared = await startCluster(MODELS, 'hi-cluster-redis-', { REDIS_URL, REDIS_KEY_PREFIX: prefix });
      expect(shared.output).not.toMatch(/without REDIS_URL/);
      shared.child.kill('SIGTERM');
      expect(await shared.exited).toBe(0);
    } finally {
      await clearRedisPrefix(prefix);
    }
  }, 60_000);

  it('stops, rather than restarting forever, when workers cannot start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hi-cluster-bad-'));
    writeFileSync(join(dir, 'models.yaml'), 'models:\n  - id: a\n    context_length: 10\n    route: [{ kind: nope }]\n');
    const child = launch(dir, { PORT: '0' });
    let output = '';
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(code).toBe(1);
    expect(output).toMatch(/kind "nope" has no adapter/);
    expect(output).toMatch(/"level":"error".*failed to start .*stopping/);
  });
});
