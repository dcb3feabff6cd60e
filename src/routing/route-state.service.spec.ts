import { createHash } from 'node:crypto';
import { UpstreamError } from '../common/errors';
import type { ModelRegistry } from '../config/model-registry.service';
import type { ModelDef, RouteDef, RoutingDef } from '../config/registry.types';
import { EMPTY_ROUTING } from '../config/routing.parser';
import { endpointKey, RouteStateService } from './route-state.service';

const routing: RoutingDef = { ...EMPTY_ROUTING, circuitBreaker: { failureThreshold: 2, cooldownMs: 60_000, halfOpenRequests: 1 } };
const registry = { current: () => ({ routing }) } as unknown as ModelRegistry;

const route = (id: string, baseUrl?: string, key?: string): RouteDef => ({
  id,
  kind: 'vllm',
  baseUrl,
  apiKeys: key ? [key] : [],
  providerModelId: id,
  weight: 1,
  locality: 'local',
  headers: {},
  timeouts: {},
  options: {},
  where: 'x',
});
const model = (id: string, routes: RouteDef[]) => ({ id, routes }) as unknown as ModelDef;
const http503 = () => new UpstreamError({ failure: 'http', upstreamStatus: 503, message: 'overloaded' });

describe('RouteStateService', () => {
  it('keeps one state per model and route id, across reloads that bring new objects', () => {
    const s = new RouteStateService(registry);
    const m1 = model('m', [route('a', 'http://gpu:8000/v1')]);
    const st = s.get(m1, m1.routes[0]);
    s.failed(st, s.acquire(st), http503());
    const m2 = model('m', [route('a', 'http://gpu:8000/v1')]);
    expect(s.get(m2, m2.routes[0])).toBe(st);
    expect(st.breaker.consecutiveFailures).toBe(1);
  });

  it('counts failed attempts in failureRate, those that do not count against the endpoint too, not one every route would answer', () => {
    const s = new RouteStateService(registry);
    const m1 = model('m', [route('a', 'http://gpu:8000/v1')]);
    const st = s.get(m1, m1.routes[0]);
    expect(s.stats(st).failureRate).toBeUndefined();
    const notFound = new UpstreamError({ failure: 'http', upstreamStatus: 404, message: 'The model `x` does not exist.' });
    s.failed(st, s.acquire(st), notFound);
    s.failed(st, s.acquire(st), notFound);
    expect(s.stats(st)).toMatchObject({ failureRate: 1, errorRate: undefined });
    expect(st.breaker.state).toBe('closed');
    // DeepSeek's "Model Not Exist" is a 400: counted. A request the gateway knows every route refuses is not.
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'http', upstreamStatus: 400, message: 'Model Not Exist' }));
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'http', upstreamStatus: 400, message: 'bad', sameOnEveryRoute: true }));
    expect(s.stats(st)).toMatchObject({ failureRate: 1, attempts: 3 });
    s.succeeded(st, s.acquire(st), { ttftMs: 50, durationMs: 60 });
    expect(s.stats(st).failureRate).toBeCloseTo(3 / 4, 9);
  });

  it('forgets what it knew when a reload points the route at another server', () => {
    const s = new RouteStateService(registry);
    const m1 = model('m', [route('a', 'http://gpu-1:8000/v1')]);
    const st = s.get(m1, m1.routes[0]);
    s.failed(st, s.acquire(st), http503());
    s.failed(st, s.acquire(st), http503());
    expect(st.breaker.state).toBe('open');
    const m2 = model('m', [route('a', 'http://gpu-2:8000/v1')]);
    expect(s.get(m2, m2.routes[0]).breaker.state).toBe('closed');
  });

  it("keeps failures of requests still in flight on the old server off the new server's circuit", () => {
    const s = new RouteStateService(registry);
    const transitions: string[] = [];
    s.onTransition((st, t) => transitions.push(`${st.key} ${t}`));
    const m1 = model('m', [route('a', 'http://gpu-1:8000/v1')]);
    const old = s.get(m1, m1.routes[0]);
    const permits = [s.acquire(old), s.acquire(old)];
    // Reloaded to another server while two requests run on the old one; then they fail.
    const m2 = model('m', [route('a', 'http://gpu-2:8000/v1')]);
    const fresh = s.get(m2, m2.routes[0]);
    for (const p of permits) s.failed(s.get(m1, m1.routes[0]), p, http503());
    expect(fresh).not.toBe(old);
    expect(fresh.breaker.state).toBe('closed');
    expect(s.availability(fresh)).toBe('ok');
    // Nor is the old state's opening announced (SharedStateService would copy it to Redis under the route's key).
    expect(transitions).toEqual([]);
  });

  it('shares one endpoint between routes of several models on one server and key', () => {
    const s = new RouteStateService(registry);
    const a = model('a', [route('r', 'http://gpu:8000/v1', 'k1')]);
    const b = model('b', [route('r', 'http://GPU:8000/', 'k1')]);
    const c = model('c', [route('r', 'http://gpu:8000/v1', 'k2')]);
    expect(s.get(a, a.routes[0]).endpoint).toBe(s.get(b, b.routes[0]).endpoint);
    expect(s.get(c, c.routes[0]).endpoint).not.toBe(s.get(a, a.routes[0]).endpoint);
    expect(endpointKey(a, a.routes[0])).not.toContain('k1'); // a digest, never the key
  });

  it('tells apart routes on one server whose credential is in the URL or a header, and never shows it', () => {
    const s = new RouteStateService(registry);
    const at = (id: string, url: string, headers: Record<string, string> = {}) => {
      const m = model(id, [{ ...route('r', url), headers }]);
      return s.get(m, m.routes[0]).endpoint;
    };
    const bad = at('bad', 'http://gpu:8000/v1?key=BADKEY');
    expect(at('good', 'http://gpu:8000/v1?key=GOODKEY')).not.toBe(bad);
    expect(at('bad-too', 'http://gpu:8000/v1?key=BADKEY')).toBe(bad);
    expect(at('user', 'http://alice:pw@gpu:8000/v1')).not.toBe(at('user2', 'http://bob:pw@gpu:8000/v1'));
    expect(at('h1', 'http://gpu:8000/v1', { 'x-api-key': 'one' })).not.toBe(at('h2', 'http://gpu:8000/v1', { 'x-api-key': 'two' }));
    expect(bad.key).not.toMatch(/BADKEY/);
    // A route with its key alone keeps the endpoint it had (state shared through Redis goes on).
    const digest = createHash('sha256').update('k1').digest('hex').slice(0, 8);
    expect(endpointKey(model('k', [route('r', 'http://gpu:8000/v1', 'k1')]), route('r', 'http://gpu:8000/v1', 'k1'))).toBe(
      `vllm http://gpu:8000#${digest}`,
    );
    // So does one whose other headers and query parameters carry no credential (OpenRouter's
    // X-Title, Azure's api-version): endpoints and their shared state stay as they were.
    const plain = { ...route('r', 'http://gpu:8000/v1?api-version=2024-10-21', 'k1'), headers: { 'X-Title': 'app', 'HTTP-Referer': 'x' } };
    expect(endpointKey(model('k', [plain]), plain)).toMatch(new RegExp(`^vllm http://gpu:8000(/v1)?#${digest}$`));
  });

  it('says why a route is unavailable: unhealthy endpoint, open circuit', () => {
    const s = new RouteStateService(registry);
    const m = model('m', [route('a', 'http://gpu:8000/v1')]);
    const st = s.get(m, m.routes[0]);
    expect(s.availability(st)).toBe('ok');
    s.setHealth(st.endpoint.key, { ok: false, detail: 'HTTP 503' });
    expect(s.availability(st)).toBe('unhealthy');
    expect(s.describe(st, 'unhealthy')).toBe('failing health checks (HTTP 503)');
    s.setHealth(st.endpoint.key, { ok: true });
    expect(s.availability(st)).toBe('ok');
    s.failed(st, s.acquire(st), http503());
    s.failed(st, s.acquire(st), http503());
    expect(s.availability(st)).toBe('circuit_open');
    expect(s.describe(st, 'circuit_open')).toMatch(/^circuit open after 2 consecutive failures, half-open in (59|60) s$/);
  });

  it('lets a recovered endpoint skip the cooldown, but not one whose probes never failed', () => {
    const s = new RouteStateService(registry);
    const m = model('m', [route('a', 'http://gpu:8000/v1')]);
    const st = s.get(m, m.routes[0]);
    const seen: string[] = [];
    s.onTransition((x, t) =>
      seen.push(`${x.key}:${t}:${Math.round(x.breaker.openUntil - performance.now()) <= 0 ? 'ends now' : 'cooling'}`),
    );
    s.failed(st, s.acquire(st), http503());
    s.failed(st, s.acquire(st), http503());
    s.setHealth(st.endpoint.key, { ok: true });
    expect(s.availability(st)).toBe('circuit_open');
    s.setHealth(st.endpoint.key, { ok: false });
    s.setHealth(st.endpoint.key, { ok: true });
    expect(s.availability(st)).toBe('ok');
    expect(s.acquire(st)).toBe('probe');
    // The shortened cooldown is announced (and so shared), once.
    s.setHealth(st.endpoint.key, { ok: false });
    s.setHealth(st.endpoint.key, { ok: true });
    expect(seen).toEqual(['m|a:opened:cooling', 'm|a:opened:ends now']);
  });

  it("announces circuit transitions, and counts only the endpoint's own failures", () => {
    const s = new RouteStateService(registry);
    const seen: string[] = [];
    s.onTransition((st, t) => seen.push(`${st.key}:${t}`));
    const m = model('m', [route('a')]);
    const st = s.get(m, m.routes[0]);
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'http', upstreamStatus: 400, message: 'bad' }));
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'aborted', message: 'gone' }));
    expect(st.breaker.consecutiveFailures).toBe(0);
    s.failed(st, s.acquire(st), http503());
    s.failed(st, s.acquire(st), http503());
    st.breaker.probeSucceeded(performance.now());
    s.succeeded(st, s.acquire(st), { ttftMs: 40, durationMs: 100, completionTokens: 30 });
    expect(seen).toEqual(['m|a:opened', 'm|a:closed']);
    // failureRate counts the 400 too (a route may answer nothing else); errorRate does not.
    expect(s.stats(st)).toEqual({ ttftMs: 40, tokensPerSecond: 500, errorRate: 2 / 3, failureRate: 3 / 4, attempts: 4, failedInARow: 0 });
  });

  it('counts the attempts a route failed in a row until it answers, while its window holds them', () => {
    const s = new RouteStateService(registry);
    const m = model('m', [route('a')]);
    const st = s.get(m, m.routes[0]);
    s.succeeded(st, s.acquire(st), { ttftMs: 5, durationMs: 10 });
    const notFound = () => new UpstreamError({ failure: 'http', upstreamStatus: 404, message: 'no such model' });
    for (let i = 0; i < 3; i++) s.failed(st, s.acquire(st), notFound());
    // A client gone, or what the request itself asked for, says nothing of the route: one client
    // sending a prompt over the context thrice would otherwise rank the best route last.
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'aborted', message: 'gone' }));
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'http', upstreamStatus: 400, message: 'bad', sameOnEveryRoute: true }));
    const tooLong = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.";
    for (const message of [tooLong, 'temperature: must be at most 2'])
      s.failed(st, s.acquire(st), new UpstreamError({ failure: 'http', upstreamStatus: 400, message }));
    // Nor what the gateway marks as the request's or its own (a Gemini answer refused for the client's history).
    s.failed(st, s.acquire(st), new UpstreamError({ failure: 'protocol', code: 'safety', message: 'x', gatewayFault: true }));
    expect(s.stats(st)).toMatchObject({ ttftMs: 5, failedInARow: 3 });
    const later = performance.now() + (routing.statsWindow.seconds + 1) * 1000;
    expect(s.stats(st, later).failedInARow).toBe(0);
    s.succeeded(st, s.acquire(st), { ttftMs: 5, durationMs: 10 });
    expect(s.stats(st).failedInARow).toBe(0);
    // A streak left from before the window emptied (or a reload changed it) does not carry on.
    for (let i = 0; i < 3; i++) s.failed(st, s.acquire(st), notFound());
    st.resetStats({ size: 10, seconds: 60 });
    s.failed(st, s.acquire(st), notFound());
    expect(s.stats(st).failedInARow).toBe(1);
  });

  it('forgets routes and endpoints a reloaded config no longer has', () => {
    const s = new RouteStateService(registry);
    const before = [model('m', [route('a', 'http://gpu-1:8000/v1'), route('b', 'http://gpu-2:8000/v1')])];
    s.prime(before);
    const after = [model('m', [route('a', 'http://gpu-1:8000/v1')])];
    s.retain(after);
    expect([...s.all()].map((st) => st.key)).toEqual(['m|a']);
    expect(s.findEndpoint(endpointKey(before[0], before[0].routes[1]))).toBeUndefined();
    expect(s.findEndpoint(endpointKey(after[0], after[0].routes[0]))).toBeDefined();
  });
});
