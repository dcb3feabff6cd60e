import {
  backoffMs,
  effectiveStatus,
  initialState,
  isUsable,
  waitsForRefresh,
  transition,
  TransitionRefused,
  type AccountState,
  type StatePolicy,
} from './account-state';

const policy: StatePolicy = { cooldownMs: 60_000, maxCooldownMs: 3_600_000, failureThreshold: 3 };
const T = 1_700_000_000_000;

describe('account state machine', () => {
  it('429 with a reset time: cooldown until then', () => {
    const s = transition(initialState(), { type: 'rate_limited', message: 'limit', until: T + 90_000 }, T, policy);
    expect(s).toMatchObject({ status: 'cooldown', cooldownUntil: T + 90_000, failures: 1, lastError: 'limit', lastErrorAt: T });
    expect(isUsable(s, T + 89_999)).toBe(false);
    expect(effectiveStatus(s, T + 90_000)).toBe('active');
  });

  it('429 without a reset time: default cooldown, doubling while failures repeat, capped', () => {
    let s = initialState();
    const lengths: number[] = [];
    for (let i = 0; i < 8; i++) {
      const now = T + i * 10_000_000;
      s = transition(s, { type: 'rate_limited', message: 'limit' }, now, policy);
      lengths.push(s.cooldownUntil! - now);
    }
    expect(lengths).toEqual([60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000]);
    expect(backoffMs(1, policy)).toBe(60_000);
  });

  it('a reset time beyond the maximum cooldown is capped', () => {
    const s = transition(initialState(), { type: 'rate_limited', message: 'weekly limit', until: T + 30 * 86_400_000 }, T, policy);
    expect(s.cooldownUntil).toBe(T + policy.maxCooldownMs);
  });

  it('a shorter reset time never shortens a running cooldown', () => {
    const a = transition(initialState(), { type: 'rate_limited', message: 'x', until: T + 500_000 }, T, policy);
    const b = transition(a, { type: 'rate_limited', message: 'y', until: T + 1000 }, T, policy);
    expect(b.cooldownUntil).toBe(T + 500_000);
  });

  it('auth failures: counted, cooldown at the threshold', () => {
    let s = initialState();
    s = transition(s, { type: 'auth_failed', message: '401' }, T, policy);
    s = transition(s, { type: 'auth_failed', message: '401' }, T, policy);
    expect(s).toMatchObject({ status: 'active', failures: 2, lastError: '401' });
    s = transition(s, { type: 'auth_failed', message: '401 again' }, T, policy);
    expect(s).toMatchObject({ status: 'cooldown', cooldownUntil: T + 60_000, failures: 3 });
  });

  it('a refresh the token endpoint could not make: a cooldown until the next try, never counted or grown', () => {
    let s = initialState();
    for (let i = 0; i < 5; i++) s = transition(s, { type: 'refresh_unavailable', message: '503', until: T + 30_000 }, T, policy);
    expect(s).toMatchObject({ status: 'cooldown', cooldownUntil: T + 30_000, failures: 0, lastError: '503' });
    const disabled = transition(initialState(), { type: 'disable' }, T, policy);
    expect(transition(disabled, { type: 'refresh_unavailable', message: '503', until: T + 30_000 }, T, policy)).toBe(disabled);
  });

  it('a refresh that failed leaves a longer cooldown (a rate limit) as it was; one that succeeded ends only a wait for it', () => {
    const limited = transition(initialState(), { type: 'rate_limited', message: 'usage limit', until: T + 3_600_000 }, T, policy);
    expect(transition(limited, { type: 'refresh_unavailable', message: 'token refresh failed: 503', until: T + 30_000 }, T, policy)).toBe(
      limited,
    );
    expect(transition(limited, { type: 'refreshed' }, T, policy)).toBe(limited);
    const waiting = transition(
      initialState(),
      { type: 'refresh_unavailable', message: 'token refresh failed: 503', until: T + 30_000 },
      T,
      policy,
    );
    expect(waitsForRefresh(waiting)).toBe(true);
    expect(waitsForRefresh(limited)).toBe(false);
    expect(transition(waiting, { type: 'refreshed' }, T, policy)).toMatchObject({ status: 'active', cooldownUntil: null, failures: 0 });
  });

  it('a success resets the failures; a success with nothing to reset is no change (same object)', () => {
    const failed = transition(initialState(), { type: 'auth_failed', message: '401' }, T, policy);
    const ok = transition(failed, { type: 'succeeded' }, T, policy);
    expect(ok).toMatchObject({ status: 'active', failures: 0, lastError: '401' });
    expect(transition(ok, { type: 'succeeded' }, T, policy)).toBe(ok);
  });

  it('an expired cooldown is active again, and the next event starts from there', () => {
    const cool = transition(initialState(), { type: 'rate_limited', message: 'x', until: T + 1000 }, T, policy);
    const ok = transition(cool, { type: 'succeeded' }, T + 2000, policy);
    expect(ok).toMatchObject({ status: 'active', cooldownUntil: null, failures: 0 });
  });

  it('invalid_grant revokes from any state but revoked', () => {
    for (const start of ['active', 'cooldown', 'disabled'] as const) {
      const s: AccountState = { ...initialState(), status: start, cooldownUntil: start === 'cooldown' ? T + 1e6 : null };
      expect(transition(s, { type: 'refresh_rejected', message: 'invalid_grant' }, T, policy)).toMatchObject({
        status: 'revoked',
        cooldownUntil: null,
        lastError: 'invalid_grant',
      });
    }
  });

  it('revoked and disabled accounts ignore rate and auth failures', () => {
    for (const status of ['revoked', 'disabled'] as const) {
      const s: AccountState = { ...initialState(), status };
      expect(transition(s, { type: 'rate_limited', message: 'x' }, T, policy)).toBe(s);
      expect(transition(s, { type: 'auth_failed', message: 'x' }, T, policy)).toBe(s);
    }
  });

  it('admin disable and enable; enable clears a cooldown', () => {
    const cool = transition(initialState(), { type: 'rate_limited', message: 'x', until: T + 1e6 }, T, policy);
    const off = transition(cool, { type: 'disable' }, T, policy);
    expect(off).toMatchObject({ status: 'disabled', cooldownUntil: null });
    expect(transition(off, { type: 'rate_limited', message: 'x' }, T, policy).status).toBe('disabled');
    expect(transition(off, { type: 'enable' }, T, policy)).toMatchObject({ status: 'active', failures: 0 });
    expect(transition(cool, { type: 'enable' }, T, policy)).toMatchObject({ status: 'active', cooldownUntil: null, failures: 0 });
  });

  it('refuses to enable or disable a revoked account', () => {
    const revoked = transition(initialState(), { type: 'refresh_rejected', message: 'invalid_grant' }, T, policy);
    expect(() => transition(revoked, { type: 'enable' }, T, policy)).toThrow(TransitionRefused);
    expect(() => transition(revoked, { type: 'disable' }, T, policy)).toThrow(TransitionRefused);
  });

  it('new credentials revive a revoked account but leave a disabled one disabled', () => {
    const revoked = transition(initialState(), { type: 'refresh_rejected', message: 'invalid_grant' }, T, policy);
    expect(transition(revoked, { type: 'credentials_replaced' }, T, policy)).toMatchObject({ status: 'active', failures: 0 });
    const off = transition(initialState(), { type: 'disable' }, T, policy);
    expect(transition(off, { type: 'credentials_replaced' }, T, policy).status).toBe('disabled');
  });
});
