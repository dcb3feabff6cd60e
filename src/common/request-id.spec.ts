import { requestId } from './request-id';

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('requestId', () => {
  it('is a version-7 UUID whose first 48 bits are the time in milliseconds', () => {
    const now = Date.UTC(2026, 11, 3, 21, 30, 0, 123);
    const id = requestId(now);
    expect(id).toMatch(V7);
    expect(parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(now);
  });

  it('uses the current time by default', () => {
    const before = Date.now();
    const id = requestId();
    const at = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(Date.now());
  });

  it('sorts by time: an id from a later millisecond is greater, as text too', () => {
    const ids = [0, 1, 255, 256, 1_700_000_000_000, 1_800_000_000_001].map((t) => requestId(t));
    expect([...ids].sort()).toEqual(ids);
    for (const id of ids) expect(id).toMatch(V7);
  });

  it('is unique within one millisecond', () => {
    const now = Date.now();
    const ids = new Set(Array.from({ length: 20_000 }, () => requestId(now)));
    expect(ids.size).toBe(20_000);
  });
});
