import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
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
  /**
   * The lease owner of the process that spooled them (it may hold the account's refresh lease,
   * taken to store them): released once they are stored, rather than holding refreshes back
   * until it lapses.
   */
  owner?: string;
}

const PREFIX = 'subscription-tokens-';
const SUFFIX = '.json';
const PARTIAL = '.tmp';
/**
 * A file `write` began this long ago and never renamed: its process died between the two (a
 * write and a rename take milliseconds).
 */
const ORPHAN_MS = 60_000;

@Injectable()
export class TokenSpool {
  constructor(private readonly config: AppConfig) {}

  /** Writes one file (atomically: a reader never sees half of it) and returns its path. */
  async write(entries: readonly SpooledTokens[]): Promise<string> {
    const dir = this.config.spoolDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const name = `${PREFIX}${process.pid}-${randomUUID()}`;
    const path = join(dir, `${name}${SUFFIX}`);
    const tmp = join(dir, `${name}${PARTIAL}`);
    await writeFile(tmp, JSON.stringify({ tokens: entries }), { mode: 0o600 });
    await rename(tmp, path);
    return path;
  }

  /**
   * The token spool files in the spool directory (any process's), with those a process that died
   * between writing and renaming one left whole (the account's only working login) taken back.
   */
  async files(): Promise<string[]> {
    const dir = this.config.spoolDir;
    const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const files = names.filter((n) => n.startsWith(PREFIX) && n.endsWith(SUFFIX)).map((n) => join(dir, n));
    for (const n of names) if (n.startsWith(PREFIX) && n.endsWith(PARTIAL)) await this.recover(join(dir, n), files);
    return files;
  }

  /**
   * A left-over partial file: renamed to a spool file when it holds whole entries, else set aside
   * (its write was cut short: nothing in it can be stored). One still being written is left alone.
   */
  private async recover(path: string, files: string[]): Promise<void> {
    const st = await stat(path).catch(() => undefined);
    if (!st || Date.now() - st.mtimeMs < ORPHAN_MS) return;
    const whole = await this.read(path).then(
      () => true,
      () => false,
    );
    const target = whole ? path.slice(0, -PARTIAL.length) + SUFFIX : `${path}.unreadable`;
    // Another process may take it first: then it is theirs.
    if (
      await rename(path, target).then(
        () => true,
        () => false,
      )
    ) {
      if (whole) files.push(target);
    }
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
