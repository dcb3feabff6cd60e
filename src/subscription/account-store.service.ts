import { Injectable } from '@nestjs/common';
import { In, type DataSource, type Repository } from 'typeorm';
import { DatabaseService } from '../storage/database.service';
import type { AccountState } from './account-state';
import { SubscriptionAccount } from './entities/subscription-account.entity';
import { SubscriptionAccountImport } from './entities/subscription-account-import.entity';
import type { SubscriptionProvider } from './subscription.types';

/** The database is not connected; account changes cannot be stored right now. */
export class StoreUnavailable extends Error {}

export interface SealedCredentials {
  credentials: string;
  token_version: number;
  expires_at: Date | null;
  /** When a refresh last stored tokens (any replica's); an import does not set it. */
  last_refresh_at?: Date | null;
}

const date = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));

/**
 * The `subscription_accounts` table. Only the pool and the admin API come here, never a request's
 * hot path: the pool keeps accounts in memory and writes changes through this.
 */
@Injectable()
export class AccountStore {
  constructor(private readonly db: DatabaseService) {}

  get available(): boolean {
    return this.db.dataSource !== undefined;
  }

  /** Whether the database answers right now. */
  async answers(): Promise<boolean> {
    try {
      await this.db.ping(1500);
      return true;
    } catch {
      return false;
    }
  }

  private repo(): Repository<SubscriptionAccount> {
    return this.ds().getRepository(SubscriptionAccount);
  }

  private ds(): DataSource {
    const ds = this.db.dataSource;
    if (!ds) throw new StoreUnavailable(`the database is not connected (${this.db.error ?? 'connecting'})`);
    return ds;
  }

  /** Every account, without credentials. */
  list(provider?: SubscriptionProvider): Promise<SubscriptionAccount[]> {
    return this.repo().find({ where: provider ? { provider } : {}, order: { created_at: 'ASC', name: 'ASC', id: 'ASC' } });
  }

  find(id: string): Promise<SubscriptionAccount | null> {
    return this.repo().findOne({ where: { id } });
  }

  findByName(provider: SubscriptionProvider, name: string): Promise<SubscriptionAccount | null> {
    return this.repo().findOne({ where: { provider, name } });
  }

  /** Accounts of `provider` whose credentials came from the login with one of these fingerprints. */
  findByImportFingerprint(provider: SubscriptionProvider, fingerprints: readonly string[]): Promise<SubscriptionAccount[]> {
    return this.repo().find({ where: { provider, import_fingerprint: In([...fingerprints]) }, select: { id: true, name: true } });
  }

  async sealedCredentials(id: string): Promise<SealedCredentials | undefined> {
    const row = await this.repo()
      .createQueryBuilder('a')
      .select(['a.id', 'a.token_version', 'a.expires_at', 'a.last_refresh_at'])
      .addSelect('a.credentials')
      .where('a.id = :id', { id })
      .getOne();
    return row
      ? { credentials: row.credentials, token_version: row.token_version, expires_at: row.expires_at, last_refresh_at: row.last_refresh_at }
      : undefined;
  }

  async tokenVersion(id: string): Promise<number | undefined> {
    const row = await this.repo().findOne({ where: { id }, select: { id: true, token_version: true } });
    return row?.token_version;
  }

  /**
   * The owner of the account's refresh lease if it lapsed without being released (its process
   * could not reach the database to renew it, or died), else undefined. By PostgreSQL's clock
   * there, as tryLock.
   */
  async lapsedLeaseOwner(id: string): Promise<string | undefined> {
    const row = await this.repo().findOne({ where: { id }, select: { id: true, refresh_lock_owner: true, refresh_lock_until: true } });
    if (!row?.refresh_lock_owner || !row.refresh_lock_until) return undefined;
    let lapsed = row.refresh_lock_until.getTime() < Date.now();
    if (this.db.dialect === 'postgres') {
      const [r] = await this.ds().query<Array<{ lapsed: boolean }>>('SELECT $1::timestamptz < now() AS lapsed', [row.refresh_lock_until]);
      lapsed = r?.lapsed === true;
    }
    return lapsed ? row.refresh_lock_owner : undefined;
  }

  async insert(row: Partial<SubscriptionAccount>): Promise<void> {
    const now = new Date();
    await this.repo().insert({ ...row, created_at: now, updated_at: now });
  }

  /**
   * Writes an account's state. With `expectedStatus`, only if the stored status is still that one:
   * a process never overwrites a status another process or an admin set meanwhile (it re-reads
   * instead). Returns whether the row was written.
   */
  async saveState(id: string, s: AccountState, expectedStatus?: string): Promise<boolean> {
    const res = await this.repo().update(expectedStatus === undefined ? { id } : { id, status: expectedStatus as AccountState['status'] }, {
      ...stateColumns(s),
      updated_at: new Date(),
    });
    return (res.affected ?? 0) > 0;
  }

  /**
   * New credentials from an import (a new login), with the state that goes with them; only if the
   * tokens are still at `tokenVersion`, so that of two processes importing one file at once only
   * one writes, and a login never overwrites tokens refreshed since it was read. Returns whether
   * the row was written.
   */
  async replaceCredentials(
    id: string,
    tokenVersion: number,
    sealed: string,
    fields: Partial<SubscriptionAccount>,
    s: AccountState,
  ): Promise<boolean> {
    const res = await this.repo()
      .createQueryBuilder()
      .update(SubscriptionAccount)
      .set({ ...fields, ...stateColumns(s), credentials: sealed, token_version: () => 'token_version + 1', updated_at: new Date() })
      .where('id = :id AND token_version = :tokenVersion', { id, tokenVersion })
      .execute();
    return (res.affected ?? 0) > 0;
  }

  /**
   * Which of `fingerprints` (those of one login's refresh token) were ever applied to the account
   * of that name: none when the login is new to it.
   */
  async importedFingerprints(provider: SubscriptionProvider, name: string, fingerprints: readonly string[]): Promise<string[]> {
    const rows = await this.ds()
      .getRepository(SubscriptionAccountImport)
      .find({ where: { provider, name, fingerprint: In([...fingerprints]) }, select: { fingerprint: true } });
    return rows.map((r) => r.fingerprint);
  }

  /** Records that a login was applied to the account of that name (again: no change). */
  async rememberImport(provider: SubscriptionProvider, name: string, fingerprint: string): Promise<void> {
    await this.ds()
      .createQueryBuilder()
      .insert()
      .into(SubscriptionAccountImport)
      .values({ provider, name, fingerprint, imported_at: new Date() })
      .orIgnore()
      .execute();
  }

  /**
   * Takes the refresh lease unless another process holds an unexpired one. One UPDATE, so two
   * processes never both win, on PostgreSQL or on a shared SQLite file. On PostgreSQL the lease is
   * timed by the database's clock: replicas whose clocks differ by more than the lease each took
   * it by their own, and both spent the same single-use refresh token (the account revoked).
   */
  async tryLock(id: string, owner: string, ttlMs: number): Promise<boolean> {
    const pg = this.db.dialect === 'postgres';
    const now = Date.now();
    const res = await this.repo()
      .createQueryBuilder()
      .update(SubscriptionAccount)
      .set({
        refresh_lock_owner: owner,
        refresh_lock_until: pg ? () => `now() + make_interval(secs => ${Math.round(ttlMs) / 1000})` : new Date(now + ttlMs),
      })
      .where('id = :id', { id })
      .andWhere(`(refresh_lock_until IS NULL OR refresh_lock_until < ${pg ? 'now()' : ':now'} OR refresh_lock_owner = :owner)`, {
        ...(pg ? {} : { now: new Date(now) }),
        owner,
      })
      .execute();
    return (res.affected ?? 0) > 0;
  }

  /**
   * Stores refreshed tokens at `toVersion` and gives the lease back, only if the stored tokens are
   * still at `fromVersion`, the version the refresh started from. Otherwise they were replaced
   * meanwhile (a login imported while the refresh was in flight; imports do not wait for the
   * lease): that login is newer than the one just refreshed and is kept, and the refreshed tokens
   * are dropped. Returns whether they were stored. Written whoever holds the lease by now (a
   * refresh slower than the lease): the refresh token they replace is spent. `keepLease`: the
   * lease is left as it is (the caller holds it and refreshes next).
   */
  async commitRefresh(
    id: string,
    sealed: string,
    expiresAt: number | null,
    fromVersion: number,
    toVersion: number,
    keepLease = false,
  ): Promise<boolean> {
    const now = new Date();
    const res = await this.repo()
      .createQueryBuilder()
      .update(SubscriptionAccount)
      .set({
        credentials: sealed,
        expires_at: date(expiresAt),
        token_version: toVersion,
        last_refresh_at: now,
        updated_at: now,
        ...(keepLease ? {} : { refresh_lock_owner: null, refresh_lock_until: null }),
      })
      .where('id = :id AND token_version = :fromVersion', { id, fromVersion })
      .execute();
    return (res.affected ?? 0) > 0;
  }

  async unlock(id: string, owner: string): Promise<void> {
    await this.repo().update({ id, refresh_lock_owner: owner }, { refresh_lock_owner: null, refresh_lock_until: null });
  }

  async delete(id: string): Promise<boolean> {
    const res = await this.repo().delete({ id });
    return (res.affected ?? 0) > 0;
  }
}

export function stateColumns(
  s: AccountState,
): Pick<SubscriptionAccount, 'status' | 'cooldown_until' | 'failures' | 'last_error' | 'last_error_at'> {
  return {
    status: s.status,
    cooldown_until: date(s.cooldownUntil),
    failures: s.failures,
    last_error: s.lastError,
    last_error_at: date(s.lastErrorAt),
  };
}

export function stateFromRow(row: SubscriptionAccount): AccountState {
  return {
    status: row.status,
    cooldownUntil: row.cooldown_until ? row.cooldown_until.getTime() : null,
    failures: row.failures,
    lastError: row.last_error,
    lastErrorAt: row.last_error_at ? row.last_error_at.getTime() : null,
  };
}
