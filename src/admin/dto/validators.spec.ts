import { validateSync } from 'class-validator';
import { IsUsdAmount, parseTimestamp, usdText } from './validators';

describe('parseTimestamp', () => {
  it('reads ISO 8601 dates and times, with or without an offset, and Unix seconds', () => {
    expect(parseTimestamp('2026-02-28')?.toISOString()).toBe('2026-02-28T00:00:00.000Z');
    expect(parseTimestamp('2028-02-29T23:59:59Z')?.toISOString()).toBe('2028-02-29T23:59:59.000Z');
    expect(parseTimestamp('2026-11-21T10:00:00+02:00')?.toISOString()).toBe('2026-11-21T08:00:00.000Z');
    expect(parseTimestamp(1_800_000_000)?.getTime()).toBe(1_800_000_000_000);
    expect(parseTimestamp('1800000000')?.getTime()).toBe(1_800_000_000_000);
    // Up to the last second before the year 10000, as the error message says; milliseconds are not seconds.
    expect(parseTimestamp('253402300799')?.toISOString()).toBe('9999-12-31T23:59:59.000Z');
    expect(parseTimestamp('253402300800')).toBeUndefined();
    expect(parseTimestamp('1800000000000')).toBeUndefined();
  });

  it.each([
    '20261207', // ISO's basic form, not 1970-08-23 in Unix seconds
    '2099-02-30',
    '2026-02-29',
    '2026-13-01',
    '2026-00-10',
    '2026-04-31',
    '2026-01-01T24:00:00Z',
    '2026-01-01T10:60',
    '2026-01-01T10:00:61Z',
    '2026-01-01T10:00+25:00',
    'soon',
  ])('refuses %s instead of rolling it over', (text) => {
    expect(parseTimestamp(text)).toBeUndefined();
  });
});

describe('IsUsdAmount', () => {
  class Budget {
    @IsUsdAmount()
    usd!: unknown;
  }
  const valid = (usd: unknown) => {
    const b = new Budget();
    b.usd = usd;
    return validateSync(b).length === 0;
  };

  it('takes numbers and decimal strings of at most 12 digits either side of the point', () => {
    for (const ok of [0, 12.5, '12.50', '0.000000000001', 999_999_999_999, 0.1, 0.0000005, 0.1 + 0.2])
      expect([ok, valid(ok)]).toEqual([ok, true]);
  });

  it('refuses an amount that 12 decimals would round to 0, rather than make it a budget of 0', () => {
    for (const bad of [1e-13, '0.0000000000001', -1, Number.NaN, Infinity, 1e12, '1e3', '12,5'])
      expect([bad, valid(bad)]).toEqual([bad, false]);
  });

  it('keeps a number to 12 decimals', () => {
    expect(usdText(0.1)).toBe('0.1');
    expect(usdText(12.5)).toBe('12.5');
    expect(usdText(0.1 + 0.2)).toBe('0.3');
    expect(usdText(0.0000005)).toBe('0.0000005');
    expect(usdText(' 7.25 ')).toBe('7.25');
    // As written, not the double's binary expansion (toFixed(12) gave 100000.100000000006).
    expect(usdText(100000.1)).toBe('100000.1');
    expect(usdText(99999.99)).toBe('99999.99');
    expect(usdText(1e-7)).toBe('0.0000001');
    expect(usdText(250)).toBe('250');
  });
});
