import { utcDay, utcMonth } from '../common/principal';
import { LocalLimits, type AdmitArgs, type StoreLimits } from './local-limits';

const NONE: StoreLimits = { rpm: -1, tpm: -1, concurrency: -1, dayBudget: -1, monthBudget: -1 };
const T0 = Date.UTC(2026, 10, 21, 10, 0, 0, 0);

function setup() {
  let now = T0;
  const limits = new LocalLimits(() => now);
  let n = 0;
  const admit = (l: Partial<StoreLimits>, extra: Partial<AdmitArgs> = {}) =>
    limits.admit({
      keyId: 'k',
      rid: `r${++n}`,
      limits: { ...NONE, ...l },
      tokens: 0,
      costNano: 0,
      leaseMs: 600_000,
      baseline: { day: '', dayNano: 0, month: '', monthNano: 0 },
      ...extra,
    });
  const settle = (rid: string, bucket: number, estimate: number, actual: number, costNano: number, track = { tokens: true, spend: true }) =>
    limits.settle({
      keyId: 'k',
      rid,
      bucket,
      estimateTokens: estimate,
      actualTokens: actual,
      costNano,
      baseline: { day: '', dayNano: 0, month: '', monthNano: 0 },
      trackTokens: track.tokens,
      trackSpend: track.spend,
    });
  return { limits, admit, settle, advance: (ms: number) => (now += ms), rid: () => `r${n}` };
}

describe('per-process limits', () => {
  it("goes on from the shared store's spend, which only ever raises the counter", () => {
    const { limits, admit } = setup();
    const day = String(utcDay(T0));
    const month = String(utcMonth(T0));
    limits.observe('k', { day, dayNano: 900, month, monthNano: -1 });
    expect(admit({ dayBudget: 1000 }, { costNano: 101 })).toMatchObject({ ok: false, limit: 'daily_budget', spentNano: 900 });
    // An older report (a settlement answered after a later admission) lowers nothing.
    limits.observe('k', { day, dayNano: 500, month, monthNano: 700 });
    expect(admit({ dayBudget: 1000, monthBudget: 750 }, { costNano: 100 })).toMatchObject({
      ok: false,
      limit: 'monthly_budget',
      spentNano: 700,
      // Until the 1st of next month, 00:00 UTC, as the Redis script's refusal says.
      retryAfterMs: Date.UTC(2026, 11, 1) - T0,
    });
    expect(admit({ dayBudget: 1000 }, { costNano: 100 }).ok).toBe(true);
  });

  it('raises the baseline it gives the shared store to the spend the store last reported', () => {
    const { limits } = setup();
    const day = String(utcDay(T0));
    const month = String(utcMonth(T0));
    const loaded = { day, dayNano: 100, month, monthNano: 100 };
    expect(limits.sharedBaseline('k', loaded)).toEqual(loaded);
    limits.observe('k', { day: String(utcDay(T0) - 1), dayNano: 9000, month, monthNano: -1 });
    limits.observe('k', { day, dayNano: 700, month, monthNano: 800 });
    limits.observe('k', { day: String(utcDay(T0) - 1), dayNano: 9500, month, monthNano: 750 }); // late, and older
    expect(limits.sharedBaseline('k', loaded)).toEqual({ day, dayNano: 700, month, monthNano: 800 });
    // A baseline loaded for an earlier day takes the store's later one.
    expect(limits.sharedBaseline('k', { day: '', dayNano: 0, month: '', monthNano: 0 })).toEqual({
      day,
      dayNano: 700,
      month,
      monthNano: 800,
    });
  });

  it('gives the shared store its own count too, spend it never saw included, less what settlements still to be made there will add', () => {
    const { limits, admit, settle, rid } = setup();
    const day = String(utcDay(T0));
    const month = String(utcMonth(T0));
    const none = { day: '', dayNano: 0, month: '', monthNano: 0 };
    limits.observe('k', { day, dayNano: 500, month, monthNano: 700 });
    // Admitted and settled here while the store was away: 100 it never saw.
    admit({ dayBudget: 10_000 }, { costNano: 100 });
    settle(rid(), Math.floor(T0 / 1000), 0, 0, 100);
    expect(limits.sharedBaseline('k', none)).toMatchObject({ day, dayNano: 600, month, monthNano: 800 });
    // Highest of the figures, never their sum: a request-log baseline that holds the 100 too.
    expect(limits.sharedBaseline('k', { day, dayNano: 650, month, monthNano: 750 })).toMatchObject({ dayNano: 650, monthNano: 800 });
    // 30 of it is yet to be settled in the store, which will add it: the baseline leaves it out.
    const pending = new Map([
      [`d:${day}`, 30],
      [`m:${month}`, 30],
    ]);
    expect(limits.sharedBaseline('k', none, pending)).toMatchObject({ dayNano: 570, monthNano: 770 });
  });

  it('never takes a token bucket below zero when a request used less than it reserved', () => {
    const { limits, settle } = setup();
    // Settled against a bucket that holds nothing (the shared store lost it): nothing to take back.
    settle('gone', Math.floor(T0 / 1000), 1500, 20, 0);
    expect(
      limits.admit({
        keyId: 'k',
        rid: 'x',
        limits: { ...NONE, tpm: 100 },
        tokens: 101,
        costNano: 0,
        leaseMs: 1,
        baseline: { day: '', dayNano: 0, month: '', monthNano: 0 },
      }),
    ).toMatchObject({ ok: false, limit: 'tpm', tpmUsed: 0 });
  });

  it('admits rpm requests in any 60 s and says when the next one fits', () => {
    const { admit, advance } = setup();
    expect(admit({ rpm: 3 }).ok).toBe(true);
    advance(30_000);
    expect(admit({ rpm: 3 }).ok).toBe(true);
    const third = admit({ rpm: 3 });
    expect(third).toMatchObject({ ok: true, rpmUsed: 3 });
    expect(third.rpmResetMs).toBe(30_000); // the first request leaves the window then
    advance(15_000);
    const refused = admit({ rpm: 3 });
    expect(refused).toMatchObject({ ok: false, limit: 'rpm', retryAfterMs: 15_000 });
    advance(15_000);
    expect(admit({ rpm: 3 }).ok).toBe(true);
    expect(admit({ rpm: 3 }).ok).toBe(false);
  });

  it('names tpm_limit, not a full rpm window, for a request larger than the whole tpm_limit: no wait makes it fit', () => {
    const { admit } = setup();
    expect(admit({ rpm: 1, tpm: 1000 }, { tokens: 10 }).ok).toBe(true);
    expect(admit({ rpm: 1, tpm: 1000 }, { tokens: 10 })).toMatchObject({ ok: false, limit: 'rpm' });
    expect(admit({ rpm: 1, tpm: 1000 }, { tokens: 5000 })).toMatchObject({ ok: false, limit: 'tpm' });
  });

  it('counts tokens per minute, refuses what would pass the limit, and settles to what was used', () => {
    const { admit, settle, advance } = setup();
    const a = admit({ tpm: 1000 }, { tokens: 800 });
    expect(a).toMatchObject({ ok: true, tpmUsed: 800 });
    expect(admit({ tpm: 1000 }, { tokens: 300 })).toMatchObject({ ok: false, limit: 'tpm', retryAfterMs: 60_000 });
    settle('r1', a.bucket, 800, 100, 0);
    expect(admit({ tpm: 1000 }, { tokens: 300 })).toMatchObject({ ok: true, tpmUsed: 400 });
    // A request that ends after its bucket left the window adds only what it used beyond its estimate.
    advance(61_000);
    settle('r1', a.bucket, 800, 900, 0);
    expect(admit({ tpm: 1000 }, { tokens: 0 })).toMatchObject({ ok: true, tpmUsed: 100 });
  });

  it('holds requests in flight to max_concurrency until they settle or their lease ends', () => {
    const { admit, settle, advance } = setup();
    const first = admit({ concurrency: 2 });
    expect(admit({ concurrency: 2 }).ok).toBe(true);
    expect(admit({ concurrency: 2 })).toMatchObject({ ok: false, limit: 'concurrency' });
    settle('r1', first.bucket, 0, 0, 0);
    expect(admit({ concurrency: 2 }).ok).toBe(true);
    expect(admit({ concurrency: 2 }).ok).toBe(false);
    advance(600_001); // the leases of r2 and r4 ran out (a process that never settled)
    expect(admit({ concurrency: 2 }).ok).toBe(true);
  });

  it('reserves the estimated cost against budgets and settles the real one', () => {
    const { admit, settle } = setup();
    const a = admit({ dayBudget: 1000 }, { costNano: 600 });
    expect(a.ok).toBe(true);
    // 600 reserved + 600 > 1000: refused while the first is in flight, for a second, not the day.
    expect(admit({ dayBudget: 1000 }, { costNano: 600 })).toMatchObject({
      ok: false,
      limit: 'daily_budget',
      spentNano: 0,
      reservedNano: 600,
      costNano: 600,
      retryAfterMs: 1000,
    });
    settle('r1', a.bucket, 0, 0, 150);
    const b = admit({ dayBudget: 1000 }, { costNano: 600 });
    expect(b.ok).toBe(true);
    settle('r3', b.bucket, 0, 0, 850);
    // 1000 spent: nothing more today, not even a free request.
    expect(admit({ dayBudget: 1000 }, { costNano: 1 })).toMatchObject({ ok: false, limit: 'daily_budget', spentNano: 1000 });
    expect(admit({ dayBudget: 1000 }, { costNano: 0 }).ok).toBe(true);
  });

  it('names the budget that frees later when both are over, and a reservation-full budget frees in a second', () => {
    const { admit } = setup();
    const day = String(utcDay(T0));
    const baseline = { day, dayNano: 1000, month: String(utcMonth(T0)), monthNano: 1000 };
    // Both spent: the daily budget frees at midnight, the monthly one on the 1st; the 1st it is.
    expect(admit({ dayBudget: 1000, monthBudget: 1000 }, { costNano: 1, baseline })).toMatchObject({
      ok: false,
      limit: 'monthly_budget',
      retryAfterMs: Date.UTC(2026, 11, 1) - T0,
    });
    // The day spent, the month full only with a request in flight: midnight.
    const { admit: admit2 } = setup();
    expect(admit2({ monthBudget: 5000 }, { costNano: 3000 }).ok).toBe(true);
    expect(admit2({ dayBudget: 1000, monthBudget: 5000 }, { costNano: 2500, baseline: { ...baseline, monthNano: 0 } })).toMatchObject({
      ok: false,
      limit: 'daily_budget',
      retryAfterMs: 14 * 3_600_000,
    });
    // The month full only with it, the day free: a second.
    expect(admit2({ dayBudget: 10_000, monthBudget: 5000 }, { costNano: 2500 })).toMatchObject({
      ok: false,
      limit: 'monthly_budget',
      retryAfterMs: 1000,
    });
  });

  it("names the monthly budget on a month's last day, when both free at midnight, as the Redis script does", () => {
    const { admit, advance } = setup();
    advance(Date.UTC(2026, 10, 30, 12) - T0); // 30 November, 12:00 UTC
    const now = Date.UTC(2026, 10, 30, 12);
    const baseline = { day: String(utcDay(now)), dayNano: 1000, month: String(utcMonth(now)), monthNano: 1000 };
    expect(admit({ dayBudget: 1000, monthBudget: 1000 }, { costNano: 1, baseline })).toMatchObject({
      ok: false,
      limit: 'monthly_budget',
      retryAfterMs: 12 * 3_600_000,
    });
  });

  it('starts a budget period from the request log baseline, and renews at the next UTC day and month', () => {
    const { admit, advance } = setup();
    const baseline = { day: String(Math.floor(T0 / 86_400_000)), dayNano: 900, month: '202611', monthNano: 5000 };
    expect(admit({ dayBudget: 1000 }, { costNano: 200, baseline })).toMatchObject({
      ok: false,
      limit: 'daily_budget',
      spentNano: 900,
      retryAfterMs: 14 * 3_600_000,
    });
    expect(admit({ monthBudget: 5100 }, { costNano: 200, baseline })).toMatchObject({
      ok: false,
      limit: 'monthly_budget',
      spentNano: 5000,
    });
    advance(14 * 3_600_000); // 2026-11-22 00:00 UTC: the baseline is yesterday's
    expect(admit({ dayBudget: 1000 }, { costNano: 200, baseline }).ok).toBe(true);
    expect(admit({ monthBudget: 5100 }, { costNano: 200, baseline }).ok).toBe(false);
    advance(9 * 86_400_000); // December
    expect(admit({ monthBudget: 5100 }, { costNano: 200, baseline }).ok).toBe(true);
  });

  it('counts a request in the day it started, as its request-log row does, also when it ends after midnight', () => {
    const { admit, settle, advance } = setup();
    advance(14 * 3_600_000 - 10_000); // 23:59:50 UTC
    const late = admit({ dayBudget: 1000 }, { costNano: 100 });
    expect(late.ok).toBe(true);
    advance(20_000); // 00:00:10: a new day
    settle('r1', late.bucket, 0, 0, 900);
    // Yesterday's 900 is not today's: today's budget is whole.
    expect(admit({ dayBudget: 1000 }, { costNano: 1000 }).ok).toBe(true);
  });

  it('forgets idle keys with nothing in flight', () => {
    const { limits, admit, advance } = setup();
    admit({ rpm: 5 });
    advance(1000);
    limits.sweep(500);
    expect(limits.size).toBe(0);
    admit({ concurrency: 1 });
    advance(1000);
    limits.sweep(500);
    expect(limits.size).toBe(1);
  });
});
