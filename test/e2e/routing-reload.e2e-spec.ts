import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';
import { startGateway, type TestGateway } from '../helpers/gateway';

const TOKEN = 'routing-reload-admin-token';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MODELS_V1 = `
models:
  - id: r/first
    context_length: 4096
    route: [{ kind: mock, id: m1, tokens: 3 }]
  - id: r/slow
    context_length: 4096
    route: [{ kind: mock, id: slow, tokens: 8, tokens_per_second: 20 }]
`;
const MODELS_V2 = `
models:
  - id: r/first
    context_length: 4096
    router: round_robin
    route: [{ kind: mock, id: m1, tokens: 3 }, { kind: mock, id: m2, tokens: 3 }]
  - id: r/second
    context_length: 4096
    route: [{ kind: mock, id: s1, tokens: 2 }]
`;

/**
 * Config reload by POST /admin/routing/reload and by SIGHUP: the new files are validated whole
 * and swapped in at once; a bad file is refused with the reason and the old config keeps
 * serving; requests in flight finish on the config they started with.
 */
describe('routing config reload', () => {
  let gw: TestGateway;
  let client: OpenAI;

  const reload = async (headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) => {
    const res = await fetch(`${gw.url}/admin/routing/reload`, { method: 'POST', headers });
    return {
      status: res.status,
      body: (await res.json()) as Record<string, unknown> & { error?: { message: string; type: string; code: string } },
    };
  };
  const modelIds = async () => (await client.models.list()).data.map((m) => m.id).sort();
  const write = (file: string, text: string) => writeFileSync(join(gw.dir, file), text);

  const logLines: string[] = [];

  beforeAll(async () => {
    gw = await startGateway({
      models: MODELS_V1,
      routing: 'routing_strategy: weighted\n',
      env: { ADMIN_TOKEN: TOKEN, LOG_LEVEL: 'info' },
      logLines,
    });
    client = gw.client();
  });
  afterAll(() => gw?.close());

  it('is guarded by ADMIN_TOKEN', async () => {
    expect((await reload({})).status).toBe(401);
    expect((await reload({ authorization: 'Bearer wrong-token-wrong-token' })).status).toBe(403);
  });

  it('swaps in a valid new config, while a request in flight finishes on the old one', async () => {
    // r/slow takes ~400 ms to stream; the new config no longer has it.
    const inflight = client.chat.completions.create({ model: 'r/slow', stream: true, messages: [{ role: 'user', content: 'x' }] });
    const stream = await inflight;
    write('models.yaml', MODELS_V2);
    const res = await reload();
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'reloaded', models: ['r/first', 'r/second'] });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    expect(text.split(' ')).toHaveLength(8);

    expect(await modelIds()).toEqual(['r/first', 'r/second']);
    expect(
      (await client.chat.completions.create({ model: 'r/second', messages: [{ role: 'user', content: 'x' }] })).choices[0].message.content,
    ).toBe('Hello from');
    const err = await client.chat.completions
      .create({ model: 'r/slow', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const routing = (await (await fetch(`${gw.url}/routing`)).json()) as { models: Array<{ id: string; strategy: string }> };
    expect(routing.models.find((m) => m.id === 'r/first')?.strategy).toBe('round_robin');
  });

  it('logs each admin change (method, path, status, request id), and not the reads', async () => {
    logLines.length = 0;
    expect((await reload()).status).toBe(200);
    await fetch(`${gw.url}/admin/routing`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const audit = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.context === 'AdminAudit');
    expect(audit).toEqual([
      expect.objectContaining({ level: 'info', method: 'POST', path: '/admin/routing/reload', status: 200, reqId: expect.any(String) }),
    ]);
    logLines.length = 0;
  });

  it("keeps a model's default created (the start) across reloads, which clients cache by", async () => {
    const created = async () => (await client.models.list()).data.map((m) => [m.id, m.created]);
    const before = await created();
    await new Promise((r) => setTimeout(r, 1100));
    expect((await reload()).status).toBe(200);
    expect(await created()).toEqual(before);
  });

  it.each([
    [
      'an unknown adapter kind',
      `models:\n  - id: r/x\n    context_length: 10\n    route: [{ kind: carrier-pigeon }]\n`,
      undefined,
      /kind "carrier-pigeon" has no adapter/,
    ],
    ['a YAML syntax error', 'models:\n  - id: [r/x\n', undefined, /models\.yaml:\d+: YAML syntax error/],
    ['an empty models.yaml (caught half-written)', '', undefined, /models\.yaml defines no models/],
    ['an empty model list', 'models: []\n', undefined, /models\.yaml defines no models/],
    ['an unknown strategy in routing.yaml', MODELS_V2, 'routing_strategy: telepathy\n', /routing_strategy "telepathy" is unknown/],
    ['a bad retry setting in routing.yaml', MODELS_V2, 'retry: { max_retries: -1 }\n', /retry\.max_retries\): must be at least 0/],
    ['an emptied routing.yaml (caught half-written)', MODELS_V2, '# nothing yet\n', /routing\.yaml is missing or empty/],
    [
      'a bad per-route setting',
      `models:\n  - id: r/x\n    context_length: 10\n    route: [{ kind: mock, context_length: huge }]\n`,
      undefined,
      /context_length must be a whole number/,
    ],
  ])('refuses %s with the reason and keeps serving the old config', async (_, models, routing, reason) => {
    write('models.yaml', models);
    if (routing) write('routing.yaml', routing);
    const res = await reload();
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'config_refused' });
    expect(res.body.error!.message).toMatch(reason);
    expect(res.body.error!.message).toMatch(/stays/);
    // The operator reading the log sees it too, as for SIGHUP.
    const logged = logLines.filter((l) => l.includes('admin API: the new configuration was refused, the old one stays'));
    const line = JSON.parse(logged.at(-1)!) as { level: string; pid: number; msg: string };
    expect(line).toMatchObject({ level: 'error', pid: process.pid });
    expect(line.msg).toMatch(reason);
    logLines.length = 0;
    expect(await modelIds()).toEqual(['r/first', 'r/second']);
    expect(
      (await client.chat.completions.create({ model: 'r/second', messages: [{ role: 'user', content: 'x' }] })).choices[0].message.content,
    ).toBe('Hello from');
    write('models.yaml', MODELS_V2);
    write('routing.yaml', 'routing_strategy: weighted\n');
  });

  it('refuses a reload that finds the routing file gone, keeping its settings', async () => {
    write('routing.yaml', 'routing_strategy: weighted\nhealth_check: 7\n');
    expect((await reload()).status).toBe(200);
    rmSync(join(gw.dir, 'routing.yaml'));
    const res = await reload();
    expect(res.status).toBe(422);
    expect(res.body.error!.message).toMatch(/routing\.yaml is missing or empty/);
    const admin = await fetch(`${gw.url}/admin/routing`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(JSON.stringify(await admin.json())).toContain('"health_check_seconds":7');
    write('routing.yaml', 'routing_strategy: weighted\n');
    expect((await reload()).status).toBe(200);
  });
});

/**
 * SIGHUP needs a real process (jest gives each test file its own `process` object, which real
 * signals never reach): these run the built server, as an operator would.
 */
describe('routing config reload in the built server', () => {
  const main = resolve(__dirname, '../../dist/main.js');
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  afterAll(async () => {
    // Every test stops its server; one that failed half-way may have left it running.
    const alive = children.filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(
      alive.map(
        (c) =>
          new Promise<void>((done) => {
            const hard = setTimeout(() => c.kill('SIGKILL'), 10_000);
            c.once('exit', () => {
              clearTimeout(hard);
              done();
            });
            c.kill('SIGTERM');
          }),
      ),
    );
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** `start`, again on another random port while the one it drew is taken (other suites run alongside). */
  async function launch(
    env: Record<string, string>,
    whileStarting?: (child: ChildProcess) => void,
  ): Promise<{ child: ChildProcess; dir: string; url: string; output: () => string }> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await start(env, whileStarting);
      } catch (err) {
        if (attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
      }
    }
  }

  async function start(
    env: Record<string, string>,
    whileStarting?: (child: ChildProcess) => void,
  ): Promise<{ child: ChildProcess; dir: string; url: string; output: () => string }> {
    if (!existsSync(main)) throw new Error('dist/main.js is missing: run `npm run build` first (npm test does)');
    const dir = mkdtempSync(join(tmpdir(), 'hi-reload-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'models.yaml'), MODELS_V1);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const child = spawn(process.execPath, [main], {
      cwd: dir,
      env: {
        ...process.env,
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
        ADMIN_TOKEN: TOKEN,
        MODELS_CONFIG_PATH: join(dir, 'models.yaml'),
        ROUTING_CONFIG_PATH: join(dir, 'routing.yaml'),
        DB_SQLITE_PATH: join(dir, 'gw.sqlite'),
        REQUEST_LOG_SPOOL_DIR: join(dir, 'spool'),
        DB_BACKEND: 'sqlite',
        DATABASE_URL: '',
        REDIS_URL: '',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    whileStarting?.(child);
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    const ready = env.WORKERS === '2' ? /2 workers serving/ : /listening on http/;
    const until = Date.now() + 30_000;
    while (!ready.test(output)) {
      if (Date.now() > until || child.exitCode !== null || child.signalCode !== null) throw new Error(`gateway did not start:\n${output}`);
      await sleep(100);
    }
    return { child, dir, url: `http://127.0.0.1:${port}`, output: () => output };
  }

  /** Asks on fresh connections (so that, with several workers, every worker gets asked). */
  async function servedEverywhere(url: string, model: string, n = 12): Promise<number[]> {
    return Promise.all(
      Array.from({ length: n }, async () => {
        const res = await fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', connection: 'close' },
          body: JSON.stringify({ model, messages: [{ role: 'user', content: 'x' }] }),
        });
        await res.text();
        return res.status;
      }),
    );
  }

  async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
    const until = Date.now() + 15_000;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
      await sleep(100);
    }
  }

  it('reloads on SIGHUP, and on SIGHUP refuses a bad file and keeps serving', async () => {
    const gw = await launch({});
    writeFileSync(join(gw.dir, 'models.yaml'), MODELS_V2);
    gw.child.kill('SIGHUP');
    await waitFor(async () => (await servedEverywhere(gw.url, 'r/second', 1))[0] === 200, 'the new model is served');
    writeFileSync(join(gw.dir, 'models.yaml'), 'models: [not a model]\n');
    gw.child.kill('SIGHUP');
    await waitFor(async () => /reload refused|was refused/.test(gw.output()), 'the refusal is logged');
    expect(gw.child.exitCode).toBeNull();
    expect(await servedEverywhere(gw.url, 'r/second', 3)).toEqual([200, 200, 200]);
    gw.child.kill('SIGTERM');
  });

  it.each([['1'], ['2']])('with WORKERS=%s, SIGHUPs while the server starts are applied once it is up, not fatal', async (workers) => {
    // As from a config manager right after a deploy: the signal's default action ends a process.
    // From 400 ms on: the app takes a second or more to load; before node has read its first
    // module (some 60-80 ms) nothing can hold a signal.
    // One timer per start (launch starts again on another port if the one it drew is taken).
    const timers: NodeJS.Timeout[] = [];
    const gw = await launch({ WORKERS: workers }, (child) => {
      timers.push(setTimeout(() => timers.push(setInterval(() => child.kill('SIGHUP'), 150)), 400));
    }).finally(() => timers.forEach((t) => clearInterval(t)));
    expect(gw.child.exitCode).toBeNull();
    expect(gw.child.signalCode).toBeNull();
    await waitFor(async () => /configuration reloaded/.test(gw.output()), 'the held reload is applied');
    expect(await servedEverywhere(gw.url, 'r/first')).toEqual(Array(12).fill(200));
    gw.child.kill('SIGTERM');
  });

  it('with WORKERS=2: SIGHUP to the primary and the admin API both reload every worker', async () => {
    const gw = await launch({ WORKERS: '2' });
    writeFileSync(join(gw.dir, 'models.yaml'), MODELS_V2);
    gw.child.kill('SIGHUP');
    await waitFor(async () => (await servedEverywhere(gw.url, 'r/second')).every((s) => s === 200), 'every worker serves the new model');
    expect(gw.child.exitCode).toBeNull();

    writeFileSync(join(gw.dir, 'models.yaml'), `${MODELS_V2}  - id: r/third\n    context_length: 4096\n    route: [{ kind: mock }]\n`);
    const res = await fetch(`${gw.url}/admin/routing/reload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, connection: 'close' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'reloaded', other_workers: 'asked to reload' });
    await waitFor(
      async () => (await servedEverywhere(gw.url, 'r/third')).every((s) => s === 200),
      'every worker serves the model added through the admin API',
    );
    gw.child.kill('SIGTERM');
  });
});
