/**
 * Who is calling: the API key a request was authenticated with, as the gateway's request path
 * needs it (limits, attribution). Built from the `api_keys` row; never carries the secret.
 */
export interface KeyLimits {
  rpm: number | null;
  tpm: number | null;
  concurrency: number | null;
  dailyBudgetPico: bigint | null;
  monthlyBudgetPico: bigint | null;
}

/** Cost already logged for the key in the current UTC day and month, when it has a budget. */
export interface SpendBaseline {
  /** Days since 1970-01-01 (UTC) the `dayPico` figure is for. */
  day: number;
  dayPico: bigint;
  /** year * 100 + month (UTC) the `monthPico` figure is for. */
  month: number;
  monthPico: bigint;
}

export interface Principal {
  id: string;
  name: string;
  /** The key's first characters, safe to show (`hyi-AbCd1234`). */
  prefix: string;
  limits: KeyLimits;
  baseline?: SpendBaseline;
}

export function hasLimits(l: KeyLimits): boolean {
  return l.rpm !== null || l.tpm !== null || l.concurrency !== null || l.dailyBudgetPico !== null || l.monthlyBudgetPico !== null;
}

const DAY_MS = 86_400_000;

export function utcDay(ms: number): number {
  return Math.floor(ms / DAY_MS);
}

export function utcMonth(ms: number): number {
  const d = new Date(ms);
  return d.getUTCFullYear() * 100 + d.getUTCMonth() + 1;
}

export function startOfUtcDay(ms: number): Date {
  return new Date(utcDay(ms) * DAY_MS);
}

export function startOfUtcMonth(ms: number): Date {
  const d = new Date(ms);
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
}

export function startOfNextUtcMonth(ms: number): Date {
  const d = new Date(ms);
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
}
