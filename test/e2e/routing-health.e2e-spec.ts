import OpenAI, { APIError } from 'openai';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { startBlackhole } from '../helpers/blackhole';
import { startGateway, type TestGateway } from '../helpers/gateway';

type Health = {
  status: string;
  info?: Record<string, unknown>;
  error?: Record<string, unknown>;
  details: {
    routing: { status: string; degraded_endpoints: Array<{ model: string; route: string; reason: string }>; unservable_models?: string[] };
  };
};
type AdminRoute = {
  id: string;
  available: boolean;
  share: number;
  circuit: { state: string; consecutive_failures: number };
  health: { status: string; endpoint: string };
  stats: {
    requests_total: number;
    failures_total: number;
    error_rate: number | null;
    failure_rate: number | null;
    ttft_ms: { mean: number | null };
  };
};
type AdminView = { models: Array<{ id: string; routes: AdminRoute[] }> };

const TOKEN = 'routing-health-admin-token';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Chat calls an upstream received (health probes are GETs). */
const chats = (u: OpenAiUpstream) => u.requests.filter((r) => r.method === 'POST');

/** Polls `check` until it returns true; the machine may be slow, so the limit is generous. */
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
    await sleep(100);
  }
}

/**
 * Circuit breakers and active health checks: an endpoint goes down for a while (its server
 * stopped) and comes back on the same port. Clients keep getting whole answers from the other
 * route meanwhile, the failing endpoint stops getting traffic, /health says what is degraded,
 * and traffic returns to the endpoint once it has recovered.
 */
describe('circuit breakers and health checks', () => {
  const steady = new OpenAiUpstream();
  const flaky = new OpenAiUpstream();
  const failing = new OpenAiUpstream();
  let flakyPort = 0;
  let gw: TestGateway;
  let client: OpenAI;

  const admin = async (): Promise<AdminView> =>
    (await fetch(`${gw.url}/admin/routing`, { headers: { authorization: `Bearer ${TOKEN}` } })).json() as Promise<AdminView>;
  const route = async (model: string, id: string) => (await admin()).models.find((m) => m.id === model)!.routes.find((r) => r.id === id)!;
  const health = async (path = '/health') => {
    const res = await fetch(`${gw.url}${path}`);
    return { status: res.status, body: (await res.json()) as Health };
  };
  const ask = (model: string) => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] });
  const servedBy = async (res: { id: string }) => (await gw.rows()).find((r) => r.id === res.id.slice(4))!.endpoint;

  beforeAll(async () => {
    const steadyUrl = await steady.start();
    const flakyUrl = await flaky.start();
    flakyPort = Number(new URL(flakyUrl).port);
    const failingUrl = await failing.start();
    gw = await startGateway({
      env: { ADMIN_TOKEN: TOKEN },
      routing: `
health_check: 1
health_check_timeout_ms: 1000
retry: { max_retries: 1, backoff_ms: 20, max_backoff_ms: 50 }
circuit_breaker: { failure_threshold: 2, cooldown_seconds: 1.5, half_open_requests: 1 }
`,
      models: `
models:
  - id: h/pair
    context_length: 8192
    router: priority
    route:
      - { kind: vllm, id: flaky, base_url: "${flakyUrl}", provider_model_id: ok }
      - { kind: openai_compat, id: steady, base_url: "${steadyUrl}", provider_model_id: ok }
  - id: h/solo
    context_length: 8192
    route:
      - { kind: openai_compat, id: broken, base_url: "${failingUrl}", provider_model_id: "error:503" }
`,
    });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    await Promise.all([steady.stop(), flaky.stop(), failing.stop()]);
  });

  it('starts healthy: /health and /health/ready are up, the first route serves', async () => {
    await eventually(async () => (await route('h/pair', 'flaky')).health.status === 'healthy', 'the first probe round is in');
    expect(await servedBy(await ask('h/pair'))).toBe('flaky');
    const live = await health();
    expect(live.status).toBe(200);
    expect(live.body.details.routing).toMatchObject({ status: 'up', degraded_endpoints: [] });
    expect((await health('/health/ready')).status).toBe(200);
  });

  it('while an endpoint is down: whole answers from the other route, no traffic to the dead one, /health degraded and /health/ready 503', async () => {
    await flaky.stop();
    // The first requests find out the hard way: the connection is refused, retried, then the
    // next route answers. Every client gets a whole answer.
    for (let i = 0; i < 3; i++) {
      const res = await ask('h/pair');
      expect(res.choices[0].message.content).toBe('echo: hi');
      expect(await servedBy(res)).toBe('steady');
    }
    const r = await route('h/pair', 'flaky');
    expect(r.circuit.state === 'open' || r.health.status === 'unhealthy').toBe(true);
    expect(r.available).toBe(false);
    expect(r.share).toBe(0);
    expect(r.stats.failures_total).toBeGreaterThanOrEqual(2);

    // From now on the dead endpoint is not even tried.
    const res = await ask('h/pair');
    const row = (await gw.rows()).find((x) => x.id === res.id.slice(4))!;
    expect((row.metadata as { attempts: Array<{ route: string }> }).attempts.map((a) => a.route)).toEqual(['steady']);

    await eventually(async () => (await route('h/pair', 'flaky')).health.status === 'unhealthy', 'a probe has failed');
    const live = await health();
    expect(live.status).toBe(200);
    expect(live.body.status).toBe('degraded');
    expect(live.body.details.routing.degraded_endpoints).toEqual([expect.objectContaining({ model: 'h/pair', route: 'flaky' })]);
    expect(JSON.stringify(live.body)).not.toContain('127.0.0.1'); // /health is public: no upstream URLs
    expect((await health('/health/ready')).status).toBe(503);

    const routing = (await (await fetch(`${gw.url}/routing`)).json()) as {
      models: Array<{ id: string; routes: Array<{ id: string; share: number; available: boolean }> }>;
    };
    expect(routing.models.find((m) => m.id === 'h/pair')!.routes).toEqual([
      expect.objectContaining({ id: 'flaky', share: 0, available: false }),
      expect.objectContaining({ id: 'steady', share: 1, available: true }),
    ]);
  });

  it('when the endpoint comes back on the same port, traffic returns to it and health is restored', async () => {
    await flaky.start(flakyPort);
    await eventually(async () => (await servedBy(await ask('h/pair'))) === 'flaky', 'the recovered endpoint serves again');
    const r = await route('h/pair', 'flaky');
    expect(r.health.status).toBe('healthy');
    expect(r.circuit.state).toBe('closed');
    await eventually(async () => (await health('/health/ready')).status === 200, 'readiness is back');
    expect((await health()).body.status).toBe('ok');
  });

  it('opens the circuit of a route that keeps failing: fast 503 with Retry-After, and the upstream is left alone', async () => {
    // Each request: one call and one retry; two failures open the circuit.
    const first = await ask('h/solo').catch((e: APIError) => e);
    expect((first as APIError).status).toBe(502);
    expect(chats(failing)).toHaveLength(2);
    await eventually(async () => (await route('h/solo', 'broken')).circuit.state === 'open', 'the circuit is open', 5000);

    const refused = await ask('h/solo').catch((e: APIError) => e);
    expect(refused).toBeInstanceOf(APIError);
    expect((refused as APIError).status).toBe(503);
    expect((refused as APIError).code).toBe('no_available_route');
    expect((refused as APIError).message).toMatch(/broken: circuit open after 2 consecutive failures/);
    expect(Number((refused as APIError).headers?.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(chats(failing)).toHaveLength(2); // not even tried

    // /health says which model cannot be served, but stays 200 while another can: every replica
    // sees the same dead upstream, and a load balancer taking them all out would stop h/pair too.
    const live = await health();
    expect(live.status).toBe(200);
    expect(live.body.status).toBe('degraded');
    expect(live.body.details.routing.status).toBe('degraded');
    expect(live.body.details.routing.unservable_models).toEqual(['h/solo']);
    const ready = await health('/health/ready');
    expect(ready.status).toBe(503);
    expect(ready.body.details.routing.unservable_models).toEqual(['h/solo']);

    // After the cooldown one probe request goes through (half-open); it fails and the circuit
    // opens again: a bounded trickle, never a loop.
    await sleep(1700);
    // Its cooldown over, the circuit lets a trial request through: /admin/routing says so.
    expect((await route('h/solo', 'broken')).circuit).toMatchObject({ state: 'half_open', retry_in_ms: null });
    await ask('h/solo').catch(() => undefined);
    expect(chats(failing)).toHaveLength(3);
    expect((await route('h/solo', 'broken')).circuit.state).toBe('open');
    await ask('h/solo').catch(() => undefined);
    expect(chats(failing)).toHaveLength(3);
  });

  it('keeps the latency and error figures of each route for /admin/routing', async () => {
    const r = await route('h/pair', 'steady');
    expect(r.stats.requests_total).toBeGreaterThanOrEqual(4);
    expect(r.stats.ttft_ms.mean).toBeGreaterThan(0);
    expect(r.stats.error_rate).toBe(0);
    expect(r.stats.failure_rate).toBe(0);
    expect(r.health.endpoint).toMatch(/^openai_compat http:\/\/127\.0\.0\.1:\d+$/);
  });
});

/**
 * A host that never completes a TCP connection (it drops SYNs): undici does not heed an abort
 * while connecting, so without the gateway's own race a request waited for the connect timeout
 * whatever its deadline, and the health probe round waiting on it stopped probing everyone.
 */
describe('an upstream whose connections never complete', () => {
  const steady = new OpenAiUpstream();
  let hole: Awaited<ReturnType<typeof startBlackhole>>;
  let gw: TestGateway;
  let probing: TestGateway;
  const logLines: string[] = [];

  beforeAll(async () => {
    const steadyUrl = await steady.start();
    hole = await startBlackhole();
    const models = `
models:
  - id: bh/only
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "http://127.0.0.1:${hole.port}/v1", provider_model_id: ok, timeouts: { connect_ms: 20000, total_ms: 1500 } }
  - id: bh/steady
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${steadyUrl}", provider_model_id: ok }
`;
    // Requests on a gateway without health checks (they would take the route out of service).
    gw = await startGateway({ routing: 'health_check: 0\n', models });
    probing = await startGateway({
      routing: 'health_check: 1\nhealth_check_timeout_ms: 500\n',
      models,
      logLines,
      env: { LOG_LEVEL: 'warn' },
    });
  });

  afterAll(async () => {
    await gw?.close();
    await probing?.close();
    await steady.stop();
    await hole?.close();
  });

  const ask = (signal?: AbortSignal) =>
    fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'bh/only', messages: [{ role: 'user', content: 'hi' }] }),
      signal,
    });

  it('ends a one-shot request at its total deadline, not the connect timeout', async () => {
    const started = Date.now();
    const res = await ask();
    expect(res.status).toBe(504);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('ends a one-shot request at once when its client leaves while connecting', async () => {
    const before = (await gw.rows()).length;
    await ask(AbortSignal.timeout(300)).catch(() => undefined);
    const row = (await gw.waitForRows(before + 1)).at(-1)!;
    expect(row.status_code).toBe(499);
    expect(row.latency_ms).toBeLessThan(1000);
  });

  it('says once, as a warning, that readiness fails, not at every probe', async () => {
    await eventually(async () => (await fetch(`${probing.url}/health/ready`)).status === 503, 'the endpoint to be out of service');
    for (let i = 0; i < 3; i++) expect((await fetch(`${probing.url}/health/ready`)).status).toBe(503);
    const said = logLines.filter((l) => l.includes('Health Check has failed'));
    expect(said).toHaveLength(1);
    expect(JSON.parse(said[0])).toMatchObject({ level: 'warn' });
  });

  it('keeps probing the other endpoints every round', async () => {
    const probes = () => steady.requests.filter((r) => r.method === 'GET').length;
    const first = probes();
    await sleep(3500);
    // One round a second; the hung connection's probe ends at health_check_timeout_ms each time.
    expect(probes() - first).toBeGreaterThanOrEqual(2);
  });
});

describe('health probes of servers that answer the probe with a refusal', () => {
  const noModels = new OpenAiUpstream();
  const busy = new OpenAiUpstream();
  const broken = new OpenAiUpstream();
  const wrongBase = new OpenAiUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    const [a, b, c, d] = [await noModels.start(), await busy.start(), await broken.start(), await wrongBase.start()];
    // A hosted API without /models (404), one rate-limiting (429), one failing (500).
    noModels.probeStatus = 404;
    busy.probeStatus = 429;
    broken.probeStatus = 500;
    // vLLM always serves /health: a 404 there is another server (a wrong base URL).
    wrongBase.probeStatus = 404;
    gw = await startGateway({
      env: { ADMIN_TOKEN: TOKEN },
      routing: 'health_check: 1\nhealth_check_timeout_ms: 1000\n',
      models: `
models:
  - id: p/no-models
    context_length: 8192
    route: [{ kind: openai_compat, id: a, base_url: "${a}", provider_model_id: ok }]
  - id: p/busy
    context_length: 8192
    route: [{ kind: openai_compat, id: b, base_url: "${b}", provider_model_id: ok }]
  - id: p/broken
    context_length: 8192
    route: [{ kind: openai_compat, id: c, base_url: "${c}", provider_model_id: ok }]
  - id: p/wrong-base
    context_length: 8192
    route: [{ kind: vllm, id: d, base_url: "${d}", provider_model_id: ok }]
  - id: p/anthropic-compatible
    context_length: 8192
    route: [{ kind: anthropic, id: e, base_url: "${a}", api_key: k, provider_model_id: ok }]
`,
    });
  });
  afterAll(async () => {
    await gw?.close();
    await Promise.all([noModels.stop(), busy.stop(), broken.stop(), wrongBase.stop()]);
  });

  it("takes a 404 for an OpenAI-compatible server's /models, or a 429, as a server that is up; a 5xx, or vLLM's /health 404, as down", async () => {
    const available = async () => {
      const view = (await (await fetch(`${gw.url}/admin/routing`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as AdminView;
      return Object.fromEntries(view.models.map((m) => [m.id, m.routes[0].available]));
    };
    await eventually(async () => (await available())['p/broken'] === false, 'the failing server is probed');
    await eventually(async () => (await available())['p/wrong-base'] === false, 'the vLLM route is probed');
    // An Anthropic-compatible endpoint without a model listing (as third parties' are) is up too.
    expect(await available()).toEqual({
      'p/no-models': true,
      'p/busy': true,
      'p/broken': false,
      'p/wrong-base': false,
      'p/anthropic-compatible': true,
    });
    const res = await gw.client().chat.completions.create({ model: 'p/no-models', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.choices[0].message.content).toBe('echo: hi');
  });
});
