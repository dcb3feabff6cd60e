import type { CircuitPolicy } from '../config/registry.types';

export type CircuitState = 'closed' | 'open' | 'half_open';

/** What `tryAcquire` hands out: a normal pass, or one of the few half-open probe slots. */
export type CircuitPermit = 'pass' | 'probe';

/** A change worth telling other processes about. */
export type CircuitTransition = 'opened' | 'closed';

/** The shortest a circuit opens for, whatever Retry-After said (the cooldown, if shorter, still bounds it). */
const MIN_OPEN_MS = 1000;

/**
 * One endpoint's circuit breaker. Closed, it lets everything through and counts consecutive
 * failures; at the threshold it opens and refuses traffic for the cooldown; then it is half-open
 * and lets a limited number of requests through as probes: a success closes it, a failure opens
 * it again. Pure state with the clock passed in, so it is tested without timers.
 */
export class CircuitBreaker {
  state: CircuitState = 'closed';
  consecutiveFailures = 0;
  /** When it last opened (`now` units), and until when it refuses traffic. */
  openedAt = 0;
  openUntil = 0;
  private probesInFlight = 0;

  /** Whether a request could be let through now, without taking a slot (planning and reports). */
  available(now: number, policy: CircuitPolicy): boolean {
    switch (this.state) {
      case 'closed':
        return true;
      case 'open':
        return now >= this.openUntil;
      case 'half_open':
        return this.probesInFlight < policy.halfOpenRequests;
    }
  }

  /** A permit for one attempt, or undefined when the route must be skipped. */
  tryAcquire(now: number, policy: CircuitPolicy): CircuitPermit | undefined {
    if (this.state === 'closed') return 'pass';
    if (this.state === 'open') {
      if (now < this.openUntil) return undefined;
      this.state = 'half_open';
      this.probesInFlight = 0;
    }
    if (this.probesInFlight >= policy.halfOpenRequests) return undefined;
    this.probesInFlight++;
    return 'probe';
  }

  /** The endpoint answered: whatever the state, it works. */
  onSuccess(permit: CircuitPermit | undefined): CircuitTransition | undefined {
    this.release(permit);
    this.consecutiveFailures = 0;
    if (this.state === 'closed') return undefined;
    this.state = 'closed';
    return 'closed';
  }

  /**
   * The attempt failed. `countable` says whether the failure is the endpoint's (5xx, 408, 429,
   * connection, timeout) rather than the request's (other 4xx) or the client's (it left).
   * `retryAfterMs`: when the endpoint said to come back (a 429's or 529's Retry-After); a circuit
   * it opens stays open no longer than that. A model's only route, overloaded for 3 s, was
   * otherwise refused by the gateway itself for the whole cooldown.
   */
  onFailure(
    permit: CircuitPermit | undefined,
    countable: boolean,
    now: number,
    policy: CircuitPolicy,
    retryAfterMs?: number,
  ): CircuitTransition | undefined {
    this.release(permit);
    if (!countable) return undefined;
    this.consecutiveFailures++;
    const trip = this.state === 'half_open' || (this.state === 'closed' && this.consecutiveFailures >= policy.failureThreshold);
    if (!trip) return undefined;
    // At least a second: a Retry-After of 0 made every later request a probe of a failing route.
    const wait = retryAfterMs === undefined ? policy.cooldownMs : Math.min(policy.cooldownMs, Math.max(MIN_OPEN_MS, retryAfterMs));
    this.open(now, now + wait);
    return 'opened';
  }

  /** The attempt ended without a verdict (the client left): just give the slot back. */
  onCancelled(permit: CircuitPermit | undefined): void {
    this.release(permit);
  }

  open(now: number, until: number): void {
    this.state = 'open';
    this.openedAt = now;
    this.openUntil = until;
    this.probesInFlight = 0;
  }

  /** An active health probe succeeded: stop waiting out the cooldown and let probes through. */
  /** A recovered health probe ends the cooldown now; returns whether it was running. */
  probeSucceeded(now: number): boolean {
    if (this.state !== 'open' || this.openUntil <= now) return false;
    this.openUntil = now;
    return true;
  }

  reset(): void {
    this.state = 'closed';
    this.consecutiveFailures = 0;
    this.probesInFlight = 0;
  }

  private release(permit: CircuitPermit | undefined): void {
    if (permit === 'probe' && this.probesInFlight > 0) this.probesInFlight--;
  }
}
