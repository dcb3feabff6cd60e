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
