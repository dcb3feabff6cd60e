/**
 * `Date.parse`, but an ISO 8601 date and time without an offset (`2026-12-06T10:00:00`,
 * `2026-12-06 10:00`) is UTC, as a date alone already is: `Date.parse` reads it in the server's
 * time zone, so the same file or request would mean another moment on another machine.
 */
export function parseDateUtc(text: string): number {
  const s = text.trim();
  if (/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?$/.test(s)) return Date.parse(`${s.replace(' ', 'T')}Z`);
  return Date.parse(s);
}

/**
 * An ISO 8601 date, or date and time (`T` or a space; seconds and fractions optional; `Z` or an
 * offset, else UTC), as epoch ms; undefined for anything else, an impossible date (February 30,
 * 24:00) included, which Date() would roll over. Date.parse alone also takes free text
 * ("expires soon 5" is 2001-05-01).
 */
export function parseIsoDateUtc(text: string): number | undefined {
  const s = text.trim();
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-](\d{2}):?(\d{2}))?)?$/.exec(s);
  if (!m) return undefined;
  // Date() rolls an impossible date over (February 30 is March 2, 24:00 the next day): refuse it.
  const [year, month, day, hour, minute, second, offHours, offMinutes] = m.slice(1).map((x) => (x === undefined ? 0 : Number(x)));
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (
    month < 1 ||
    month > 12 ||
    day < 1 ||
    day > daysInMonth ||
    hour > 23 ||
    minute > 59 ||
    second > 59 ||
    offHours > 23 ||
    offMinutes > 59
  )
    return undefined;
  // Without an offset a time is UTC, as a date alone is.
  const ms = parseDateUtc(s);
  return Number.isNaN(ms) ? undefined : ms;
}
