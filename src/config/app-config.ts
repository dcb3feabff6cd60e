import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseCorsOrigins, type CorsOrigins } from '../common/cors';
import type { Env } from './env.schema';

export interface UpstreamTimeouts {
  connectMs: number;
  firstByteMs: number;
  firstTokenMs: number;
  idleMs: number;
  totalMs: number;
}

export type PostgresConnection = { url: string } | { host: string; port: number; database: string; username: string; password: string };

/**
 * The typed, validated view of the environment. Built once at boot; the one place derived
 * settings (which database, parsed sizes) are worked out.
 */
export class AppConfig {
  readonly dbBackend: 'sqlite' | 'postgres';
  readonly bodyLimitBytes: number;
  readonly upstreamBodyLimitBytes: number;
  /** DB_STORE_CONTENT_LIMIT in bytes. */
  readonly storeContentLimitBytes: number;
  readonly upstreamTimeouts: UpstreamTimeouts;
  /** Undefined: CORS off. */
  readonly corsOrigins: CorsOrigins | undefined;
  /** The cap on open client connections (MAX_CONNECTIONS, or half the open-file limit); 0: none. */
  readonly maxConnections: number;

  constructor(readonly env: Env) {
    this.dbBackend = env.DB_BACKEND ?? (env.DATABASE_URL ? 'postgres' : 'sqlite');
    this.bodyLimitBytes = parseByteSize(env.BODY_LIMIT);
    this.upstreamBodyLimitBytes = parseByteSize(env.UPSTREAM_BODY_LIMIT);
    this.storeContentLimitBytes = parseByteSize(env.DB_STORE_CONTENT_LIMIT);
    this.corsOrigins = parseCorsOrigins(env.CORS_ORIGINS);
    this.maxConnections = env.MAX_CONNECTIONS ?? connectionsForFiles(openFilesLimit());
    this.upstreamTimeouts = {
      connectMs: env.UPSTREAM_CONNECT_TIMEOUT_MS,
      firstByteMs: env.UPSTREAM_FIRST_BYTE_TIMEOUT_MS,
      firstTokenMs: env.UPSTREAM_FIRST_TOKEN_TIMEOUT_MS,
      idleMs: env.UPSTREAM_IDLE_TIMEOUT_MS,
      totalMs: env.UPSTREAM_TOTAL_TIMEOUT_MS,
    };
  }

  get postgres(): PostgresConnection {
    const e = this.env;
    if (e.DATABASE_URL) return { url: e.DATABASE_URL };
    return { host: e.DB_HOST, port: e.DB_PORT, database: e.DB_NAME, username: e.DB_USER, password: e.DB_PASSWORD };
  }

  get sqlitePath(): string {
    return resolve(this.env.DB_SQLITE_PATH);
  }

  get spoolDir(): string {
    return resolve(this.env.REQUEST_LOG_SPOOL_DIR);
  }
}

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

export function parseByteSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i.exec(text.trim());
  if (!m) throw new Error(`not a byte size: ${text}`);
  return Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]);
}

/**
 * The client connections a process may hold for `openFiles` descriptors: half of them, the rest
 * kept for what each request needs besides its connection (an upstream socket, the database, the
 * spool). Past the limit Node cannot accept at all: every new connection, /health's included, is
 * closed unanswered, and upstream calls and spool writes fail. Unknown limit: no cap.
 */
export function connectionsForFiles(openFiles: number | undefined): number {
  if (openFiles === undefined || !Number.isFinite(openFiles)) return 0;
  return Math.max(1, Math.floor(openFiles / 2));
}

/**
 * The soft limit on this process's open files (Linux's /proc); undefined where it cannot be read
 * or is unlimited. Node raises its own soft limit to the hard one as it starts: that is the one read.
 */
export function openFilesLimit(limits = '/proc/self/limits'): number | undefined {
  try {
    const line = /^Max open files\s+(\S+)/m.exec(readFileSync(limits, 'latin1'))?.[1];
    const n = Number(line);
    return line !== undefined && Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
