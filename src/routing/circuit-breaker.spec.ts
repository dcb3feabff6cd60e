import { CircuitBreaker } from './circuit-breaker';

const policy = { failureThreshold: 3, cooldownMs: 1000, halfOpenRequests: 1 };

/** Fails `n` countable attempts at time `now`. */
function fail(b: CircuitBreaker, n: number, now = 0) {
  const transitions = [];
  for (let i = 0; i < n; i++) transitions.push(b.onFailure(b.tryAcquire(now, policy), true, now, policy));
  return transitions;
}

describe('CircuitBreaker', () => {
  it('opens after the threshold of consecutive failures, not before', () => {
    const b = new CircuitBreaker();
    expect(fail(b, 2)).toEqual([undefined, undefined]);
    expect(b.state).toBe('closed');
    expect(fail(b, 1)).toEqual(['opened']);
    expect(b.state).toBe('open');
    expect(b.openUntil).toBe(1000);
  });

  it('counts consecutive failures only: a success in between starts again', () => {
    const b = new CircuitBreaker();
    fail(b, 2);
    b.onSuccess(b.tryAcquire(0, policy));
    fail(b, 2);
    expect(b.state).toBe('closed');
  });

  it("does not count failures that are not the endpoint's fault", () => {
    const b = new CircuitBreaker();
    for (let i = 0; i < 10; i++) b.onFailure(b.tryAcquire(0, policy), false, 0, policy);
    expect(b.state).toBe('closed');
    expect(b.consecutiveFailures).toBe(0);
  });

  it('refuses traffic while open, until the cooldown has passed', () => {
    const b = new CircuitBreaker();
    fail(b, 3, 0);
    expect(b.available(999, policy)).toBe(false);
    expect(b.tryAcquire(999, policy)).toBeUndefined();
    expect(b.available(1000, policy)).toBe(true);
  });

  it('lets a limited number of probes through when half-open, and closes on success', () => {
    const b = new CircuitBreaker();
    fail(b, 3, 0);
    const probe = b.tryAcquire(1000, policy);
    expect(probe).toBe('probe');
    expect(b.state).toBe('half_open');
    expect(b.tryAcquire(1001, policy)).toBeUndefined(); // one probe at a time
    expect(b.available(1001, policy)).toBe(false);
    expect(b.onSuccess(probe)).toBe('closed');
    expect(b.state).toBe('closed');
    expect(b.consecutiveFailures).toBe(0);
    expect(b.tryAcquire(1002, policy)).toBe('pass');
  });

  it('opens again for a whole cooldown when a probe fails', () => {
    const b = new CircuitBreaker();
    fail(b, 3, 0);
    const probe = b.tryAcquire(1500, policy);
    expect(b.onFailure(probe, true, 1500, policy)).toBe('opened');
    expect(b.state).toBe('open');
    expect(b.openUntil).toBe(2500);
  });

  it('opens no longer than the Retry-After of the failure that trips it, and no less than a second', () => {
    const long = { ...policy, cooldownMs: 30_000 };
    const b = new CircuitBreaker();
    for (let i = 0; i < 2; i++) b.onFailure(b.tryAcquire(0, long), true, 0, long);
    expect(b.onFailure(b.tryAcquire(0, long), true, 0, long, 3000)).toBe('opened');
    expect(b.openUntil).toBe(3000);
    expect(b.tryAcquire(3000, long)).toBe('probe');
    // A longer wait than the cooldown does not lengthen it.
    expect(b.onFailure('probe', true, 3000, long, 60_000)).toBe('opened');
    expect(b.openUntil).toBe(33_000);
    // Come back at once: still a second, else every request would be a probe of a failing route.
    expect(b.tryAcquire(33_000, long)).toBe('probe');
    expect(b.onFailure('probe', true, 33_000, long, 0)).toBe('opened');
    expect(b.openUntil).toBe(34_000);
  });

  it('frees the probe slot when a probe ends without a verdict', () => {
    const b = new CircuitBreaker();
    fail(b, 3, 0);
    const probe = b.tryAcquire(1000, policy);
    b.onCancelled(probe);
    expect(b.state).toBe('half_open');
    const again = b.tryAcquire(1001, policy);
    expect(again).toBe('probe');
    // A client error is no verdict on the endpoint either.
    b.onFailure(again, false, 1002, policy);
    expect(b.state).toBe('half_open');
    expect(b.tryAcquire(1003, policy)).toBe('probe');
  });

  it('lets several probes through when configured', () => {
    const b = new CircuitBreaker();
    const p3 = { ...policy, halfOpenRequests: 3 };
    fail(b, 3, 0);
    expect([b.tryAcquire(1000, p3), b.tryAcquire(1000, p3), b.tryAcquire(1000, p3), b.tryAcquire(1000, p3)]).toEqual([
      'probe',
      'probe',
      'probe',
      undefined,
    ]);
  });

  it('cuts the cooldown short when a health probe succeeds', () => {
    const b = new CircuitBreaker();
    fail(b, 3, 0);
    b.probeSucceeded(100);
    expect(b.available(100, policy)).toBe(true);
    expect(b.tryAcquire(100, policy)).toBe('probe');
  });
});
