import { availableParallelism } from 'node:os';

/**
 * The most processes `WORKERS` may ask for. The env schema (which the workers validate) and
 * main.ts (which forks them) both read it here: when they kept limits of their own (999 and
 * 256), WORKERS=300 passed the validation and then stopped the start.
 */
export const MAX_WORKERS = 256;

/** `WORKERS`: 1 (default, one process), a number, or `auto` (one per CPU, up to MAX_WORKERS). */
export function workerCount(value: string | undefined, cpus: number = availableParallelism()): number {
  if (value === undefined || value.trim() === '') return 1;
  if (value.trim() === 'auto') return Math.min(cpus, MAX_WORKERS);
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS)
    throw new Error(`WORKERS="${value}": must be a whole number from 1 to ${MAX_WORKERS}, or "auto"`);
  return n;
}
