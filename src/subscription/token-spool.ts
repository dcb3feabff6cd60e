import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Injectable } from '@nestjs/common';
import { AppConfig } from '../config/app-config';
import type { SubscriptionProvider } from './subscription.types';

/**
 * Refreshed tokens that could not be stored before shutdown (the database was unreachable).
 * Their refresh spent the stored refresh token, so they are the account's only working login:
 * sealed as in the database, they are written next to the request-log spool and stored by the
 * next process to start, on the same compare-and-set as any refresh (over the version they
 * descend from only: a login imported or refreshed since wins).
 */
export interface SpooledTokens {
  id: string;
  provider: SubscriptionProvider;
  name: string;
  /** The credentials as `CredentialVault.seal` gives them (encrypted). */
  sealed: string;
  expiresAt: number | null;
  /** The stored token version they descend from, and the one they are stored as. */
  fromVersion: number;
  toVersion: number;
}

const PREFIX = 'subscription-tokens-';
const SUFFIX = '.json';

@Injectable()
export class TokenSpool {
  constructor(private readonly config: AppConfig) {}

  /** Writes one file (atomically: a reader never sees half of it) and returns its path. */
  async write(entries: readonly SpooledTokens[]): Promise<string> {
    const dir = this.config.spoolDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const name = `${PREFIX}${process.pid}-${randomUUID()}`;
    const path = join(dir, `${name}${SUFFIX}`);
    const tmp = join(dir, `${name}.tmp`);
    await writeFile(tmp, JSON.stringify({ tokens: entries }), { mode: 0o600 });
    await rename(tmp, path);
    return path;
  }

  /** The token spool files in the spool directory (any process's). */
  async files(): Promise<string[]> {
    const names = await readdir(this.config.spoolDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    return names.filter((n) => n.startsWith(PREFIX) && n.endsWith(SUFFIX)).map((n) => join(this.config.spoolDir, n));
  }

  /** A file's entries; throws when it is not one this class wrote. */
  async read(path: string): Promise<SpooledTokens[]> {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as { tokens?: unknown };
    if (!Array.isArray(parsed.tokens) || !parsed.tokens.every(isEntry)) throw new Error('not a token spool file');
    return parsed.tokens;
  }

  /** Done with: every entry stored or superseded. */
  remove(path: string): Promise<void> {
    return unlink(path);
  }

  /** Unreadable: set aside under another name, kept for the operator, and not read again. */
  async setAside(path: string): Promise<string> {
    const to = `${path}.unreadable`;
    await rename(path, to);
    return to;
  }
}

function isEntry(e: unknown): e is SpooledTokens {
  if (typeof e !== 'object' || e === null) return false;
  const t = e as Record<string, unknown>;
  return (
    typeof t.id === 'string' &&
    typeof t.provider === 'string' &&
    typeof t.name === 'string' &&
    typeof t.sealed === 'string' &&
    (t.expiresAt === null || Number.isFinite(t.expiresAt)) &&
    Number.isInteger(t.fromVersion) &&
    Number.isInteger(t.toVersion)
  );
}
