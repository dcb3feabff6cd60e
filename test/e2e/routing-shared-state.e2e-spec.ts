import { createServer, type AddressInfo, type Server } from 'node:net';
import Redis from 'ioredis';
import { APIError } from 'openai';
import { RouteStateService } from '../../src/routing/route-state.service';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { startGateway, type TestGateway } from '../helpers/gateway';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const TOKEN = 'shared-state-admin-token';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

type AdminView = {
  models: Array<{ id: string; routes: Array<{ id: string; circuit: { state: string; shared: boolean }; health: { status: string } }> }>;
};

/**
 * Two gateway processes' worth of state (two apps) sharing one Redis: a circuit one of them
 * opens is honoured by the other, which then leaves the failing upstream alone too; a circuit
 * closed by one closes for the other. Probe results are shared the same way.
 */
describe('circuit and health state shared through Redis', () => {
  const upstream = new OpenAiUpstream();
  const prefix = `hi-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}:`;
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  let a: TestGateway;
  let b: TestGateway;

  const view = async (gw: TestGateway) =>
    (await (await fetch(`${gw.url}/admin/routing`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as AdminView;
  const healthOf = async (gw: TestGateway, model: string) => (await view(gw)).models.find((m) => m.id === model)!.routes[0].health.status;
  const circuitOf = async (gw: TestGateway, model = 's/broken') => (await view(gw)).models.find((m) => m.id === model)!.routes[0].circuit;
  const chats = () => upstream.requests.filter((r) => r.method === 'POST').length;

  let dead: Server;

  beforeAll(async () => {
    await redis.connect();
    const base = await upstream.start();
    // An endpoint that is down: every connection reset. (A port that was just freed, as here
    // before, could be given to another suite's server meanwhile, which then answered the probes.)
    dead = createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const deadUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}/v1`;
    const opts = {
      env: { REDIS_URL, REDIS_KEY_PREFIX: prefix, ADMIN_TOKEN: TOKEN },
      routing: `
state_sync_ms: 50
health_check: 1
health_check_timeout_ms: 1000
retry: { max_retries: 0 }
circuit_breaker: { failure_threshold: 2, cooldown_seconds: 60 }
`,
      models: `
models:
  - id: s/broken
    context_length: 8192
    route:
      - { kind: openai_compat, id: broken, base_url: "${base}", provider_model_id: "error:503" }
  - id: s/heals
    context_length: 8192
    route:
      - { kind: openai_compat, id: heals, base_url: "${base}", provider_model_id: "fail-n:503:2", headers: { x-route-key: heals } }
  - id: s/dead
    context_length: 8192
    route:
      - { kind: vllm, id: dead, base_url: "${deadUrl}", provider_model_id: ok }
`,
    };
    a = await startGateway(opts);
    b = await startGateway(opts);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await upstream.stop();
    await new Promise((r) => dead.close(r));
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('a circuit opened by one process is open for the other, which no longer calls the upstream', async () => {
    for (let i = 0; i < 2; i++)
      await a
        .client()
        .chat.completions.create({ model: 's/broken', messages: [{ role: 'user', content: 'x' }] })
        .catch(() => undefined);
    expect(chats()).toBe(2);
    expect((await circuitOf(a)).state).toBe('open');
    await eventually(async () => (await circuitOf(b)).state === 'open', 'the other process adopts the open circuit');
    expect((await redis.hkeys(`${prefix}routing:circuits`)).filter((f) => f.startsWith('s/broken|broken#'))).toHaveLength(1);

    const err = (await b
      .client()
      .chat.completions.create({ model: 's/broken', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e)) as APIError;
    expect(err.status).toBe(503);
    expect(err.code).toBe('no_available_route');
    expect(chats()).toBe(2);
  });

  it('a process whose route points at another server (a reload moved it) does not take the circuit opened for the old one', async () => {
    // After the test above: s/broken's circuit is open in Redis, for the server that answers 503.
    expect((await redis.hkeys(`${prefix}routing:circuits`)).filter((f) => f.startsWith('s/broken|broken#'))).toHaveLength(1);
    const elsewhere = new OpenAiUpstream();
    const other = await elsewhere.start();
    const moved = await startGateway({
      env: { REDIS_URL, REDIS_KEY_PREFIX: prefix, ADMIN_TOKEN: TOKEN },
      routing: 'state_sync_ms: 50\ncircuit_breaker: { failure_threshold: 2, cooldown_seconds: 60 }\n',
      models: `
models:
  - id: s/broken
    context_length: 8192
    route:
      - { kind: openai_compat, id: broken, base_url: "${other}", provider_model_id: ok }
`,
    });
    try {
      await sleep(300); // several syncs
      expect((await circuitOf(moved)).state).toBe('closed');
      const res = await moved.client().chat.completions.create({ model: 's/broken', messages: [{ role: 'user', content: 'x' }] });
      expect(res.choices[0].message.content).toBeTruthy();
      // Nor does a circuit of the other server, opening and closing, close the old server's.
      const other = 's/broken|broken#ffffffffffffffff';
      await redis.hset(`${prefix}routing:circuits`, other, JSON.stringify({ open_until: Date.now() + 60_000, failures: 2 }));
      await sleep(200);
      await redis.hdel(`${prefix}routing:circuits`, other);
      await sleep(300);
      expect((await circuitOf(a)).state).toBe('open');
    } finally {
      await moved.close();
      await elsewhere.stop();
    }
  });

  it('a circuit closed by one process closes for the other', async () => {
    // Two failures on a open its circuit; b adopts it.
    for (let i = 0; i < 2; i++)
      await a
        .client()
        .chat.completions.create({ model: 's/heals', messages: [{ role: 'user', content: 'x' }] })
        .catch(() => undefined);
    await eventually(async () => (await circuitOf(b, 's/heals')).state === 'open', 'b sees the circuit open');
    // Shorten a's cooldown the way a recovered health probe would, let its half-open probe
    // succeed (the upstream now answers), and watch b follow.
    const state = a.app.get(RouteStateService);
    const endpoint = state.byKey('s/heals|heals')!.endpoint.key;
    state.setHealth(endpoint, { ok: false });
    state.setHealth(endpoint, { ok: true });
    const res = await a.client().chat.completions.create({ model: 's/heals', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBe('echo: x');
    expect((await circuitOf(a, 's/heals')).state).toBe('closed');
    await eventually(async () => (await circuitOf(b, 's/heals')).state === 'closed', 'b sees the circuit closed');
    expect(
      (await b.client().chat.completions.create({ model: 's/heals', messages: [{ role: 'user', content: 'y' }] })).choices[0].message
        .content,
    ).toBe('echo: y');
  });

  it('shares probe results: both processes know the dead endpoint, and Redis holds the result', async () => {
    await eventually(
      async () => (await healthOf(a, 's/dead')) === 'unhealthy' && (await healthOf(b, 's/dead')) === 'unhealthy',
      'both see the endpoint unhealthy',
    );
    const shared = await redis.hgetall(`${prefix}routing:health`);
    const entry = Object.entries(shared).find(([k]) => k.startsWith('vllm http://127.0.0.1:'));
    expect(entry).toBeDefined();
    expect(JSON.parse(entry![1])).toMatchObject({ ok: false });
    expect(await healthOf(a, 's/broken')).toBe('healthy');
  });
});
