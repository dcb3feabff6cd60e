import { UpstreamError } from '../common/errors';
import type { RouteDef } from '../config/registry.types';
import { AttemptScope } from './attempt-scope';

const route: RouteDef = {
  id: 'gpu-1',
  kind: 'vllm',
  baseUrl: 'http://gpu-1:8000/v1',
  apiKeys: [],
  providerModelId: 'm',
  weight: 1,
  locality: 'local',
  headers: {},
  timeouts: {},
  options: {},
  where: 'models.yaml:1',
};

/** A timeout far beyond any test, so that only the deadline under test can fire. */
const NEVER = 60_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves when `signal` aborts; fails the test if it has not within 5 s. */
function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('the signal did not abort')), 5000);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(guard);
        resolve();
      },
      { once: true },
    );
  });
}

describe('AttemptScope', () => {
  const scopes: AttemptScope[] = [];
  const open = (parent: AbortSignal, totalMs: number) => {
    const scope = new AttemptScope(parent, route, totalMs);
    scopes.push(scope);
    return scope;
  };
  afterEach(() => {
    for (const s of scopes.splice(0)) s.dispose();
  });

  it('is not aborted to begin with', () => {
    const scope = open(new AbortController().signal, NEVER);
    expect(scope.signal.aborted).toBe(false);
    expect(scope.reason()).toBeUndefined();
  });

  it('aborts with a timeout when the total deadline passes', async () => {
    // What is left of a request's deadline, as the executor passes it: not a whole number.
    const scope = open(new AbortController().signal, 19.98592399998);
    await aborted(scope.signal);
    const reason = scope.reason();
    expect(reason).toBeInstanceOf(UpstreamError);
    expect(reason).toMatchObject({
      failure: 'timeout',
      code: 'total_timeout',
      message: 'no complete answer from upstream gpu-1 within 20 ms',
      status: 504,
      route: 'gpu-1',
      provider: 'vllm',
      retryable: true,
    });
    expect(scope.signal.reason).toBe(reason);
  });

  it('aborts with a timeout when no first token arrives in time', async () => {
    const scope = open(new AbortController().signal, NEVER);
    scope.armFirstToken(20);
    await aborted(scope.signal);
    expect(scope.reason()).toMatchObject({ failure: 'timeout', code: 'first_token_timeout' });
  });

  it('does not fire the first-token deadline once disarmed', async () => {
    const scope = open(new AbortController().signal, NEVER);
    scope.armFirstToken(20);
    scope.disarmFirstToken();
    await sleep(60);
    expect(scope.signal.aborted).toBe(false);
  });

  it('aborts with a timeout when the stream goes idle', async () => {
    const scope = open(new AbortController().signal, NEVER);
    scope.armIdle(20);
    await aborted(scope.signal);
    expect(scope.reason()).toMatchObject({ failure: 'timeout', code: 'idle_timeout' });
    expect(scope.reason()?.message).toContain('gpu-1');
  });

  it('does not count time the consumer holds a chunk as upstream silence', async () => {
    const scope = open(new AbortController().signal, NEVER);
    scope.armIdle(20);
    scope.pause(); // a slow client is being written to
    await sleep(80);
    expect(scope.signal.aborted).toBe(false);
    scope.touch(); // back to waiting on the upstream
    await aborted(scope.signal);
    expect(scope.reason()).toMatchObject({ code: 'idle_timeout' });
    scope.dispose();
  });

  it('restarts the idle deadline at each chunk', () => {
    jest.useFakeTimers();
    try {
      const scope = open(new AbortController().signal, NEVER);
      scope.armIdle(100);
      for (let i = 0; i < 5; i++) {
        jest.advanceTimersByTime(60);
        scope.touch();
      }
      expect(scope.signal.aborted).toBe(false);
      jest.advanceTimersByTime(150);
      expect(scope.reason()).toMatchObject({ code: 'idle_timeout' });
      scope.dispose();
    } finally {
      jest.useRealTimers();
    }
  });

  it('aborts as aborted when the client goes away', () => {
    const client = new AbortController();
    const scope = open(client.signal, NEVER);
    client.abort();
    expect(scope.signal.aborted).toBe(true);
    expect(scope.reason()).toMatchObject({ failure: 'aborted', status: 499, retryable: false, route: 'gpu-1' });
  });

  it('starts aborted when the client has already gone', () => {
    const client = new AbortController();
    client.abort();
    const scope = open(client.signal, NEVER);
    expect(scope.reason()).toMatchObject({ failure: 'aborted' });
  });

  it('keeps the first reason', async () => {
    const client = new AbortController();
    const scope = open(client.signal, 20);
    await aborted(scope.signal);
    client.abort();
    expect(scope.reason()).toMatchObject({ failure: 'timeout', code: 'total_timeout' });
  });

  it('fires nothing after dispose', async () => {
    const client = new AbortController();
    const scope = open(client.signal, 20);
    scope.armFirstToken(20);
    scope.armIdle(20);
    scope.dispose();
    client.abort();
    await sleep(60);
    expect(scope.signal.aborted).toBe(false);
  });
});
