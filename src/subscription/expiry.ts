/** The last instant both databases store and print as an ISO date (years past 9999 do not round-trip). */
export const LATEST_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * A token expiry in epoch milliseconds that can be stored, or undefined (NaN, before 1970, after
 * year 9999). Expiries come from clients, token files and providers' answers; one out of range
 * stored as a date would break every listing of the accounts.
 */
export function storableTime(ms: number): number | undefined {
  return Number.isFinite(ms) && ms >= 0 && ms <= LATEST_TIME_MS ? ms : undefined;
}
