import { Transform } from 'class-transformer';
import { ValidateBy, type ValidationOptions } from 'class-validator';
import { parseIsoDateUtc } from '../../common/timestamp';

const DECIMAL = /^\d{1,12}(\.\d{1,12})?$/;

/** A non-negative amount of USD below 10^12 (the column's 12 integer digits): a number or a decimal string ("12.50"), at most 12 decimals. */
export function IsUsdAmount(options?: ValidationOptions): PropertyDecorator {
  return ValidateBy(
    {
      name: 'isUsdAmount',
      validator: {
        validate: (v: unknown) =>
          // A number is taken to 12 decimals, but one that would round to 0 is refused (1e-13 must not become a budget of 0).
          (typeof v === 'number' && Number.isFinite(v) && v >= 0 && v < 1e12 && (v === 0 || usdText(v) !== '0')) ||
          (typeof v === 'string' && DECIMAL.test(v.trim())),
        defaultMessage: (args) =>
          `${args?.property} must be a non-negative amount of USD below 1000000000000, with at most 12 decimals (a number or a decimal string such as "12.50")`,
      },
    },
    options,
  );
}

/** An ISO 8601 timestamp (UTC unless it has an offset) or Unix seconds. */
export function IsTimestamp(options?: ValidationOptions): PropertyDecorator {
  return ValidateBy(
    {
      name: 'isTimestamp',
      validator: {
        validate: (v: unknown) => parseTimestamp(v) !== undefined,
        defaultMessage: (args) =>
          `${args?.property} must be an ISO 8601 timestamp (2026-11-21T10:00:00Z) or Unix seconds, before the year 10000`,
      },
    },
    options,
  );
}

/** In the future (for expiry dates). */
export function IsFuture(options?: ValidationOptions): PropertyDecorator {
  return ValidateBy(
    {
      name: 'isFuture',
      validator: {
        validate: (v: unknown) => {
          const d = parseTimestamp(v);
          return d === undefined || d.getTime() > Date.now();
        },
        defaultMessage: (args) => `${args?.property} must be in the future`,
      },
    },
    options,
  );
}

export function parseTimestamp(v: unknown): Date | undefined {
  const d = parseAnyTimestamp(v);
  // Past 9999 no column stores it as sent (SQLite's text dates, PostgreSQL's display); epoch
  // seconds that large are most likely milliseconds sent by mistake.
  return d && d.getTime() < LAST_STORABLE_MS ? d : undefined;
}

const LAST_STORABLE_MS = Date.UTC(10000, 0, 1);

function parseAnyTimestamp(v: unknown): Date | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return new Date(v * 1000);
  if (typeof v !== 'string' || v.trim() === '') return undefined;
  const s = v.trim();
  // Eight digits that read as a date (20261207, ISO's basic form) are not taken as epoch seconds
  // (1970-08-23): refused, not answered for a range the operator did not mean.
  if (/^(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$/.test(s)) return undefined;
  if (/^\d{1,12}(\.\d+)?$/.test(s)) return new Date(Number(s) * 1000);
  const ms = parseIsoDateUtc(s);
  return ms === undefined ? undefined : new Date(ms);
}

/**
 * USD as given (number or string) to a normalised decimal string. A JSON number as it was written
 * (100000.1, the shortest text that reads back as the same double), not its binary expansion
 * (toFixed gives 100000.100000000006); to 12 decimals where it has more or is written with an
 * exponent.
 */
export function usdText(v: string | number): string {
  if (typeof v !== 'number') return v.trim();
  const shortest = String(v);
  if (/^\d+(\.\d{1,12})?$/.test(shortest)) return shortest;
  return v.toFixed(12).replace(/0+$/, '').replace(/\.$/, '');
}

/**
 * A query parameter read as an integer only when written as one in decimal digits: `Number()`
 * would also take `0x10`, `1e2` and an empty value (0). Anything else stays a non-number, which
 * `@IsInt()` then refuses.
 */
export function QueryInteger(): PropertyDecorator {
  return Transform(({ value }: { value: unknown }) =>
    typeof value === 'string' ? (/^-?\d{1,16}$/.test(value.trim()) ? Number(value) : NaN) : value,
  );
}
