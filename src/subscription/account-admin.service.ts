import { Injectable } from '@nestjs/common';
import { GatewayError } from '../common/errors';
import { type AccountInput, checkName, loginFingerprint } from './account-import';
import { effectiveStatus, transition, TransitionRefused, type AccountEvent } from './account-state';
import { AccountImporter, type ImportSummary } from './account-importer.service';
import { AccountPool } from './account-pool.service';
import { AccountStore, StoreUnavailable, stateFromRow } from './account-store.service';
import { CredentialVault } from './credential-vault.service';
import type { SubscriptionAccount } from './entities/subscription-account.entity';
import { RefreshFailed, RefreshRejected } from './oauth-refresh.service';
import { isDatabaseBusy } from '../storage/database-outage';
import { AccountConflictError, AccountNotFoundError, SubscriptionUnavailableError } from './subscription.errors';
import type { SubscriptionProvider } from './subscription.types';

/** How the admin API shows an account: state and metadata, never a token. */
export interface AccountView {
  id: string;
  provider: SubscriptionProvider;
  name: string;
  /** As of now: a cooldown that has run out shows as active. */
  status: string;
  cooldown_until: string | null;
  failures: number;
  last_error: string | null;
  last_error_at: string | null;
  /** Why this process cannot open the stored login (another SUBSCRIPTION_ENCRYPTION_KEY): unusable, whatever its status. */
  credentials_error: string | null;
  account_id: string | null;
  email: string | null;
  plan_type: string | null;
  token_expires_at: string | null;
  last_refresh_at: string | null;
  created_at: string;
  updated_at: string;
}

/** The admin API's operations on accounts. Each reads the database (the source of truth) and tells the pool. */
@Injectable()
export class AccountAdmin {
  constructor(
    private readonly store: AccountStore,
    private readonly pool: AccountPool,
    private readonly importer: AccountImporter,
    private readonly vault: CredentialVault,
  ) {}

  async list(provider?: SubscriptionProvider): Promise<AccountView[]> {
    await this.pool.settle();
    const rows = await this.guard(() => this.store.list(provider));
    return rows.map((r) => view(r, this.pool.credentialsError(r.id)));
  }

  async get(id: string): Promise<AccountView> {
    await this.pool.settle(id);
    return view(await this.row(id), this.pool.credentialsError(id));
  }

  /** A new account; 409 when one of that provider has the name (import replaces credentials instead). */
  async add(input: AccountInput): Promise<AccountView> {
    this.vault.require();
    const problem = checkName(input.name);
    if (problem) throw new AccountConflictError(`name: ${problem}`, 'invalid_name');
    const row = await this.importer.exclusive(() => this.insertNew(input));
    await this.pool.changed();
    return this.get(row.id);
  }

  private async insertNew(input: AccountInput): Promise<SubscriptionAccount> {
    const existing = await this.guard(() => this.store.findByName(input.provider, input.name));
    if (existing) {
      throw new AccountConflictError(
        `A ${input.provider} account named "${input.name}" exists (id ${existing.id}); POST /admin/accounts/import replaces its credentials`,
        'account_exists',
      );
    }
    const fingerprint = loginFingerprint(input.provider, input.credentials.refreshToken);
    await this.guard(() =>
      this.importer.refuseLoginInUse(input, [fingerprint, this.vault.legacyFingerprint(input.credentials.refreshToken)]),
    );
    try {
      return await this.guard(() => this.importer.insert(input, fingerprint));
    } catch (err) {
      if (err instanceof SubscriptionUnavailableError) throw err;
      throw new AccountConflictError(
        `A ${input.provider} account named "${input.name}" was just added by another request`,
        'account_exists',
      );
    }
  }

  async import(provider: SubscriptionProvider, data: unknown): Promise<ImportSummary> {
    this.vault.require();
    const summary = await this.guard(() => this.importer.importData(provider, data, 'admin'));
    await this.pool.changed();
    return summary;
  }

  disable(id: string): Promise<AccountView> {
    return this.adminTransition(id, { type: 'disable' });
  }

  enable(id: string): Promise<AccountView> {
    return this.adminTransition(id, { type: 'enable' });
  }

  /** Refreshes now. An `invalid_grant` revokes the account; the answer says what happened. */
  async refresh(id: string): Promise<{ refreshed: boolean; error?: string; account: AccountView }> {
    await this.row(id);
    this.vault.require();
    try {
      await this.guard(() => this.pool.refreshNow(id));
      return { refreshed: true, account: await this.get(id) };
    } catch (err) {
      if (!(err instanceof RefreshRejected || err instanceof RefreshFailed)) throw err;
      await this.pool.changed();
      return { refreshed: false, error: err.message, account: await this.get(id) };
    }
  }

  async remove(id: string): Promise<void> {
    const deleted = await this.guard(() => this.store.delete(id));
    if (!deleted) throw new AccountNotFoundError(id);
    await this.pool.changed();
  }

  /**
   * Written only over the status it was read with: a change made meanwhile (another replica
   * revoking the account as its refresh token was refused) is read again and the transition
   * made from it, never overwritten (an enable would put a dead login back into rotation).
   */
  private async adminTransition(id: string, event: AccountEvent): Promise<AccountView> {
    await this.pool.settle(id);
    for (let attempt = 0; ; attempt++) {
      const row = await this.row(id);
      const state = stateFromRow(row);
      let next;
      try {
        next = transition(state, event, Date.now(), this.pool.policy);
      } catch (err) {
        if (err instanceof TransitionRefused)
          throw new AccountConflictError(`Cannot ${event.type} account ${id}: ${err.message}`, 'account_revoked');
        throw err;
      }
      if (next === state || (await this.guard(() => this.store.saveState(id, next, row.status)))) break;
      if (attempt === 2)
        throw new AccountConflictError(`Account ${id} kept changing while it was being changed; send it again`, 'account_changed');
    }
    await this.pool.changed();
    return this.get(id);
  }

  private async row(id: string): Promise<SubscriptionAccount> {
    const row = await this.guard(() => this.store.find(id));
    if (!row) throw new AccountNotFoundError(id);
    return row;
  }

  /** The database being down (or gone mid-query) is a 503 that says so, not a 500. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreUnavailable)
        throw new SubscriptionUnavailableError(`Accounts cannot be read or changed: ${err.message}`, 'database_unavailable');
      if (isDatabaseBusy(err))
        throw new SubscriptionUnavailableError(
          'Accounts cannot be changed now: the database is busy (another process is writing to it); try again shortly',
          'database_unavailable',
        );
      if (!(err instanceof GatewayError) && !(await this.store.answers())) {
        throw new SubscriptionUnavailableError(
          `Accounts cannot be read or changed: the database does not answer (${(err as Error).message})`,
          'database_unavailable',
        );
      }
      throw err;
    }
  }
}

export function view(row: SubscriptionAccount, credentialsError?: string): AccountView {
  const state = stateFromRow(row);
  const now = Date.now();
  const status = effectiveStatus(state, now);
  // A date stored before its range was checked may be invalid: shown as unknown, not a 500.
  const iso = (d: Date | null) => (d && Number.isFinite(d.getTime()) ? d.toISOString() : null);
  return {
    id: row.id,
    provider: row.provider,
    name: row.name,
    status,
    cooldown_until: status === 'cooldown' ? iso(row.cooldown_until) : null,
    failures: row.failures,
    last_error: row.last_error,
    last_error_at: iso(row.last_error_at),
    credentials_error: credentialsError ?? null,
    account_id: row.external_account_id,
    email: row.email,
    plan_type: row.plan_type,
    token_expires_at: iso(row.expires_at),
    last_refresh_at: iso(row.last_refresh_at),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}
