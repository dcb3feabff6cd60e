import { randomUUID } from 'node:crypto';
import { Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { raceAbort } from '../common/abort';
import { UpstreamError } from '../common/errors';
import { AppConfig } from '../config/app-config';
import {
  type AccountEvent,
  type AccountState,
  isUsable,
  REFRESH_FAILED,
  type StatePolicy,
  transition,
  waitsForRefresh,
} from './account-state';
import { accountError, refreshUnavailable, runWithAccounts } from './account-session';
import { isOutage } from '../storage/request-log.writer';
import { AccountStore, StoreUnavailable, stateFromRow } from './account-store.service';
import { OAuthRefresher, REFRESH_TIMEOUT_MS, RefreshFailed, RefreshRejected, RefreshSlow } from './oauth-refresh.service';
import { type AccountCredentials, SUBSCRIPTION_PROVIDERS, type SubscriptionProvider } from './subscription.types';
import { CredentialVault } from './credential-vault.service';
import { AccountImporter } from './account-importer.service';
import { TokenSpool } from './token-spool';

/** What an adapter holds for one upstream call: a usable access token and whose it is. */
export interface AccountLease {
  readonly id: string;
  readonly provider: SubscriptionProvider;
  readonly name: string;
  readonly accessToken: string;
  /** Codex: the ChatGPT account id for `chatgpt-account-id`. */
  readonly externalAccountId: string | null;
  /** The token generation this lease carries; a forced refresh is skipped if a newer one exists. */
  readonly tokenVersion: number;
}

/** One account as the pool keeps it in memory. */
interface PooledAccount {
  id: string;
  provider: SubscriptionProvider;
  name: string;
  createdAt: number;
  state: AccountState;
  /** The status as last read from or written to the database (writes are conditional on it). */
  storedStatus: AccountState['status'];
  /** Undefined while the stored value cannot be opened (wrong key): the account is skipped. */
  creds?: AccountCredentials;
  credsError?: string;
  expiresAt: number | null;
  /**
   * When this process got the current token, by a refresh or reading one stored while it ran:
   * with `expiresAt`, the token's lifetime. Unknown for tokens read at start.
   */
  tokenSince?: number;
  externalAccountId: string | null;
  tokenVersion: number;
  refreshing?: Promise<void>;
  /**
   * A request waited SUBSCRIPTION_REFRESH_WAIT_MS for the refresh in flight, which goes on: later requests do
   * not wait on it again (a hung token endpoint cost each retry the whole wait).
   */
  refreshSlow?: boolean;
  /** No refresh before this (after a failed one), unless an administrator asks or the token is refused. */
  refreshNotBefore: number;
  /** Why the last refresh failed (while `refreshNotBefore` holds). */
  refreshError?: string;
  stateDirty: boolean;
  stateWrite?: Promise<void>;
  /** Counts this process's state changes, so a database read begun before one never undoes it. */
  changes: number;
  /** Refreshed while the database was unreachable: to be written when it is back. */
  credsDirty: boolean;
  /** While `credsDirty`: the stored token version those tokens descend from (written only over that one). */
  credsBase?: number;
  /** The provider's report of how much of its window this account has used (0-100), if it sends one. */
  usedPercent?: number;
  /** When `usedPercent` was reported (epoch ms); it is a hint for USAGE_READING_MS. */
  usedPercentAt?: number;
}

/** The cross-process refresh lease; a refresh is one HTTP call (REFRESH_TIMEOUT_MS) well within it. */
const LOCK_TTL_MS = REFRESH_TIMEOUT_MS + 30_000;
/** The longest a refresh waits for the sync of a process whose lease lapsed unrenewed. */
const LAPSED_LEASE_WAIT_MAX_MS = 15_000;

/**
 * The sync's period: SUBSCRIPTION_SYNC_MS, but at most a third of the lease, which the sync renews
 * for tokens the database could not store yet (with a longer period it lapsed between two syncs,
 * and another replica could refresh with the spent refresh token).
 */
export function syncPeriodMs(configured: number): number {
  return Math.min(configured, LOCK_TTL_MS / 3);
}
/** How long to wait for another process's refresh before failing this account for this request. */
const LOCK_WAIT_MS = LOCK_TTL_MS + 5_000;
const LOCK_POLL_MS = 200;
/** After a failed proactive refresh. */
const REFRESH_RETRY_MS = 30_000;
/** The refresh look-ahead is never under this (or the configured margin), however short a token's life. */
const MIN_REFRESH_MARGIN_MS = 30_000;
/** An account that failed this recently is used only when no other is left. */
const HEALTH_WINDOW_MS = 60_000;
/** A request waits for a refresh only when the token has less than this left; otherwise it refreshes behind. */
const BLOCKING_REFRESH_MS = 30_000;
/**
 * How long a report that an account's window is spent keeps it behind the others. Only answers
 * renew a report, and an account kept behind gets none, so without an end it would stay behind
 * after its window reset; once the report is this old the account is tried again (a usage-limit
 * answer then cools it down until the reset the provider names).
 */
const USAGE_READING_MS = 5 * 60_000;

/**
 * The subscription account pools, one per provider (`claude`, `codex`), shared by every surface
 * and adapter. Selection is in memory (no database round trip per request); every state change is
 * written to the database, and each process re-reads the table every SUBSCRIPTION_SYNC_MS, so
 * replicas converge on the same cooldowns and revocations and the state survives restarts.
 *
 * Token refresh happens before expiry (in the background ahead of the margin, or at acquisition
 * inside it), one at a time per account: in-process by a shared promise, across processes by a
 * lease row-lock in the database. The refresh token a process uses is always the newest stored,
 * read under the lease, because refresh tokens are single-use; or its own newer one, refreshed
 * while the database was unreachable, which it stores first.
 */
@Injectable()
export class AccountPool implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('SubscriptionPool');
  private readonly accounts = new Map<string, PooledAccount>();
  private readonly byProvider = new Map<SubscriptionProvider, PooledAccount[]>();
  private readonly cursors = new Map<SubscriptionProvider, number>();
  readonly policy: StatePolicy;
  /** Identifies this process as a refresh lease holder. */
  private readonly owner = `${process.pid}-${randomUUID()}`;
  private timer?: ReturnType<typeof setInterval>;
  private ticking?: Promise<void>;
  private loaded?: Promise<void>;
  private closed = false;
  private readonly warned = new Set<string>();

  constructor(
    private readonly config: AppConfig,
    private readonly store: AccountStore,
    private readonly refresher: OAuthRefresher,
    private readonly vault: CredentialVault,
    private readonly importer: AccountImporter,
    private readonly tokenSpool: TokenSpool,
  ) {
    const env = config.env;
    this.policy = {
      cooldownMs: env.SUBSCRIPTION_COOLDOWN_MS,
      maxCooldownMs: env.SUBSCRIPTION_MAX_COOLDOWN_MS,
      failureThreshold: env.SUBSCRIPTION_FAILURE_THRESHOLD,
    };
  }

  async onApplicationBootstrap(): Promise<void> {
    // Without the key no stored account can be opened: nothing to keep in sync (the import
    // files are only looked at, to say why they are not imported).
    if (!this.vault.configured) return this.importer.importFiles();
    this.timer = setInterval(() => void this.tick(), syncPeriodMs(this.config.env.SUBSCRIPTION_SYNC_MS));
    this.timer.unref();
    // Loaded before the gateway listens when the database is there; else as soon as it is.
    if (this.store.available) await this.ready();
    else void this.ready();
  }

  async onApplicationShutdown(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.ticking?.catch(() => undefined);
    await Promise.allSettled(
      [...this.accounts.values()].flatMap((a) => [a.stateWrite, a.refreshing]).filter((p): p is Promise<void> => p !== undefined),
    );
    // Tokens refreshed while the database was away: their refresh token is the only one still
    // valid (the stored one was spent by that refresh). Spooled first, sealed, for the next
    // process to store (a silent database would hold each try to store them for its query
    // timeout, and the process may be killed meanwhile); then a last try to store them, the
    // spool file removed if that stores them all.
    const unstored = () => [...this.accounts.values()].filter((a) => a.credsDirty && a.creds);
    const entries = unstored().map((a) => ({
      id: a.id,
      provider: a.provider,
      name: a.name,
      sealed: this.vault.seal(a, a.creds!),
      expiresAt: a.expiresAt,
      ...pendingVersions(a),
      owner: this.owner,
    }));
    if (entries.length === 0) return;
    let file: string | undefined;
    let spoolError: string | undefined;
    try {
      file = await this.tokenSpool.write(entries);
    } catch (err) {
      spoolError = (err as Error).message;
    }
    if (this.store.available) await this.flushPending().catch(() => undefined);
    const left = unstored();
    if (left.length === 0) {
      if (file) await this.tokenSpool.remove(file).catch(() => undefined);
      return;
    }
    for (const a of left)
      if (file)
        this.logger.warn(
          `${a.provider} account "${a.name}": tokens refreshed while the database was unreachable are kept in ${file} until a gateway process with the database stores them (at its start, or its next sync)`,
        );
      else
        this.logger.error(
          `${a.provider} account "${a.name}": tokens refreshed while the database was unreachable could not be stored before shutdown, nor spooled (${spoolError}); its stored refresh token is spent, so it will need new credentials (POST /admin/accounts/import)`,
        );
  }

  /** Why the account's stored login cannot be opened here, if it cannot (undefined: it can, or unknown). */
  credentialsError(id: string): string | undefined {
    const acc = this.accounts.get(id);
    return acc && !acc.creds ? acc.credsError : undefined;
  }

  /** Resolves once the pool has read the database (and imported the account files) the first time. */
  ready(): Promise<void> {
    if (!this.vault.configured) return Promise.resolve();
    this.loaded ??= this.waitForStore()
      .then(() => this.importer.importFiles())
      .then(() => this.tick());
    return this.loaded;
  }

  private async waitForStore(): Promise<void> {
    while (!this.store.available && !this.closed) await sleep(250, undefined, { ref: false });
  }

  // --- the hot path ---------------------------------------------------------------------------

  /**
   * A usable account of `provider`, round-robin, healthy accounts first, with an access token
   * that is not about to expire. Throws a retryable `UpstreamError` when none is usable, so the
   * executor falls back to the model's next route.
   */
  async acquire(
    provider: SubscriptionProvider,
    signal?: AbortSignal,
    exclude?: ReadonlySet<string>,
    freshOnly = false,
  ): Promise<AccountLease> {
    const skip = new Set(exclude);
    for (;;) {
      const acc = this.pick(provider, skip, Date.now(), freshOnly);
      if (!acc) throw this.noAccount(provider, skip);
      const now = Date.now();
      if (this.needsRefresh(acc, now, this.config.env.SUBSCRIPTION_REFRESH_MARGIN_MS) && (acc.expiresAt ?? 0) - now > BLOCKING_REFRESH_MS) {
        // Time left: this request uses the current token, the refresh happens behind it.
        if (now >= acc.refreshNotBefore) this.refresh(acc, false).catch(() => undefined);
      } else if (this.needsRefresh(acc, now, this.config.env.SUBSCRIPTION_REFRESH_MARGIN_MS)) {
        try {
          // A refresh that failed a moment ago is not tried again for every request (and each
          // of its retries) until REFRESH_RETRY_MS has passed.
          if (now < acc.refreshNotBefore) {
            // And if that left it without a usable token, it waits for the next try.
            if (acc.expiresAt !== null && acc.expiresAt <= now + 5000) this.waitForRefresh(acc, acc.refreshError ?? REFRESH_FAILED);
            throw new RefreshFailed('the last refresh failed a moment ago');
          }
          await this.waitOn(acc, this.refresh(acc, false), signal);
        } catch (err) {
          if (signal?.aborted) throw abortedError(provider);
          // A refresh that failed leaves the current token, if it still has time left.
          if (!(err instanceof RefreshRejected) && acc.creds && (acc.expiresAt === null || acc.expiresAt > Date.now() + 5000))
            return lease(acc);
          skip.add(acc.id);
          continue;
        }
      }
      if (!acc.creds || !isUsable(acc.state, Date.now())) {
        skip.add(acc.id);
        continue;
      }
      return lease(acc);
    }
  }

  /**
   * After an upstream 401: a new access token for the same account, refreshed once however many
   * requests saw the 401 together. Throws (`RefreshRejected`, `RefreshFailed`) when there is none.
   */
  async forceRefresh(l: AccountLease, signal?: AbortSignal): Promise<AccountLease> {
    const acc = this.accounts.get(l.id);
    if (!acc) throw new RefreshFailed('the account was removed');
    // Also right after a failed refresh: a refused token is news, and the endpoint may be back.
    if (acc.tokenVersion === l.tokenVersion) await this.waitOn(acc, this.refresh(acc, true, l.tokenVersion), signal);
    if (!acc.creds || acc.tokenVersion === l.tokenVersion) throw new RefreshFailed('no new token');
    if (!isUsable(acc.state, Date.now())) throw new RefreshFailed(`the account is ${acc.state.status}`);
    return lease(acc);
  }

  /**
   * A request's wait for the account's refresh, up to SUBSCRIPTION_REFRESH_WAIT_MS; a refresh a
   * request has waited out already (`refreshSlow`) is not waited on again until it ends.
   */
  private async waitOn(acc: PooledAccount, refreshing: Promise<void>, signal?: AbortSignal): Promise<void> {
    if (acc.refreshSlow && acc.refreshing === refreshing) throw new RefreshSlow('its token refresh has not answered yet');
    try {
      await waitForRefresh(refreshing, signal, this.config.env.SUBSCRIPTION_REFRESH_WAIT_MS);
    } catch (err) {
      if (signal?.aborted || acc.refreshing !== refreshing) throw err;
      acc.refreshSlow = true;
      throw new RefreshSlow((err as Error).message);
    }
  }

  succeeded(l: AccountLease): void {
    this.apply(l.id, { type: 'succeeded' });
  }

  /** A 429 or a usage limit: cooldown until `until` (epoch ms) or the default backoff. */
  rateLimited(l: AccountLease, message: string, until?: number): void {
    // A spent window's report came with the refusal; the cooldown now stands for it, and ends
    // when the provider said the window resets (or when an administrator enables the account).
    const acc = this.accounts.get(l.id);
    if (acc) acc.usedPercent = undefined;
    this.apply(l.id, { type: 'rate_limited', message: clip(message), until });
  }

  /** Rejected even with a fresh token. */
  authFailed(l: AccountLease, message: string): void {
    this.apply(l.id, { type: 'auth_failed', message: clip(message) });
  }

  /** What the provider says about the account's usage window, for health-aware selection. */
  observeUsage(l: AccountLease, usedPercent: number): void {
    const acc = this.accounts.get(l.id);
    if (acc && Number.isFinite(usedPercent)) {
      acc.usedPercent = usedPercent;
      acc.usedPercentAt = Date.now();
    }
  }

  /**
   * One upstream call with an account of `provider`, with the account handling every surface
   * shares (see `runWithAccounts`): 401 → refresh and retry, 429 / 403 → next account.
   */
  run<T>(
    provider: SubscriptionProvider,
    signal: AbortSignal,
    send: (lease: AccountLease) => Promise<T>,
  ): Promise<{ value: T; lease: AccountLease }> {
    return runWithAccounts(this, provider, signal, send);
  }

  /**
   * Usable accounts right now, per provider (for route probes and health); `fresh`: those of
   * them that have not failed lately nor reported their window spent (the ones pick() prefers).
   */
  usable(
    provider: SubscriptionProvider,
    tried: ReadonlySet<string> = new Set(),
  ): { usable: number; fresh: number; untried: number; total: number } {
    const list = this.byProvider.get(provider) ?? [];
    const now = Date.now();
    const usable = list.filter((a) => a.creds && isUsable(a.state, now));
    return {
      usable: usable.length,
      fresh: usable.filter((a) => !this.behind(a, now)).length,
      untried: usable.filter((a) => !tried.has(a.id)).length,
      total: list.length,
    };
  }

  /** An account that failed lately or whose window is spent: used only when no other is left. */
  private behind(acc: PooledAccount, now: number): boolean {
    const failedLately = acc.state.failures > 0 && (acc.state.lastErrorAt ?? 0) > now - HEALTH_WINDOW_MS;
    const spent = (acc.usedPercent ?? 0) >= 100 && (acc.usedPercentAt ?? 0) > now - USAGE_READING_MS;
    return failedLately || spent;
  }

  /** The next account in turn; one that is behind (see `behind`) only when none else is left, and not at all if `freshOnly`. */
  private pick(provider: SubscriptionProvider, skip: ReadonlySet<string>, now: number, freshOnly: boolean): PooledAccount | undefined {
    const list = this.byProvider.get(provider) ?? [];
    const n = list.length;
    const start = (this.cursors.get(provider) ?? 0) % Math.max(1, n);
    let fallback: { acc: PooledAccount; at: number } | undefined;
    for (let i = 0; i < n; i++) {
      const at = (start + i) % n;
      const acc = list[at];
      if (skip.has(acc.id) || !acc.creds || !isUsable(acc.state, now)) continue;
      // Health first: an account that failed lately or whose window is spent only when no other is left.
      if (this.behind(acc, now)) {
        if (!freshOnly) fallback ??= { acc, at };
        continue;
      }
      this.cursors.set(provider, at + 1);
      return acc;
    }
    if (fallback) this.cursors.set(provider, fallback.at + 1);
    return fallback?.acc;
  }

  /** When the first of `provider`'s accounts now cooling down is usable again (epoch ms), if any is. */
  firstUsableAgain(provider: SubscriptionProvider): number | undefined {
    const now = Date.now();
    let soonest: number | undefined;
    for (const a of this.byProvider.get(provider) ?? []) {
      const until = a.state.cooldownUntil;
      // One whose stored login cannot be opened (another encryption key) is not usable then either.
      if (!a.creds) continue;
      if (a.state.status === 'cooldown' && until !== null && until > now && (soonest === undefined || until < soonest)) soonest = until;
    }
    return soonest;
  }

  private noAccount(provider: SubscriptionProvider, skip: ReadonlySet<string>): UpstreamError {
    const list = this.byProvider.get(provider) ?? [];
    const now = Date.now();
    // The accounts this request tried count too: they are why it is here, and cool down as well.
    const soonest = this.firstUsableAgain(provider);
    const cooling = list.filter((a) => a.creds && a.state.status === 'cooldown' && (a.state.cooldownUntil ?? 0) > now);
    if (soonest !== undefined && cooling.every((a) => waitsForRefresh(a.state))) {
      // Not the provider's rate limits: its token endpoint, which the gateway tries again.
      return refreshUnavailable(
        provider,
        `every ${provider} subscription account is waiting for a new access token (${cooling[0].state.lastError ?? REFRESH_FAILED}); the refresh is tried again at ${new Date(soonest).toISOString()}`,
        Math.max(0, soonest - now),
      );
    }
    const slow = list.filter((a) => skip.has(a.id) && a.refreshing && a.refreshSlow).length;
    if (slow > 0)
      return refreshUnavailable(
        provider,
        `no usable ${provider} subscription account: the token refresh of ${slow} account${slow === 1 ? '' : 's'} has not answered within ${this.config.env.SUBSCRIPTION_REFRESH_WAIT_MS / 1000} s (it goes on)`,
      );
    if (soonest !== undefined) {
      return new UpstreamError({
        failure: 'http',
        upstreamStatus: 429,
        message: `every ${provider} subscription account is cooling down (after rate limits or repeated failures; GET /admin/accounts says which); the first is usable again at ${new Date(soonest).toISOString()}`,
        code: 'subscription_rate_limited',
        retryAfterMs: Math.max(0, soonest - now),
        retryable: true,
        gatewayFault: true,
        provider: `${provider}_sub`,
      });
    }
    const counts = countBy(
      list.map((a) => (a.creds ? (isUsable(a.state, now) ? (skip.has(a.id) ? 'failed' : 'active') : a.state.status) : 'unreadable')),
    );
    const detail =
      list.length === 0
        ? 'none is configured'
        : Object.entries(counts)
            .map(([k, v]) => `${v} ${k}`)
            .join(', ');
    return accountError(
      provider,
      `no usable ${provider} subscription account (${detail}); add, import or enable one under /admin/accounts`,
      'no_subscription_account',
    );
  }

  // --- state changes ------------------------------------------------------------------------

  private apply(id: string, event: AccountEvent): void {
    const acc = this.accounts.get(id);
    if (!acc) return;
    const next = transition(acc.state, event, Date.now(), this.policy);
    if (next === acc.state) return;
    const before = acc.state.status;
    acc.state = next;
    acc.changes++;
    if (next.status !== before)
      this.logger.log(
        `${acc.provider} account "${acc.name}": ${before} → ${next.status}${next.lastError && event.type !== 'succeeded' ? ` (${next.lastError})` : ''}`,
      );
    this.persistState(acc);
  }

  private persistState(acc: PooledAccount): void {
    acc.stateDirty = true;
    void this.flushState(acc);
  }

  private flushState(acc: PooledAccount): Promise<void> {
    acc.stateWrite ??= (async () => {
      while (acc.stateDirty && this.store.available) {
        acc.stateDirty = false;
        try {
          const state = acc.state;
          if (await this.store.saveState(acc.id, state, acc.storedStatus)) {
            acc.storedStatus = state.status;
          } else {
            // Changed elsewhere (another replica, an admin): that state wins; take it. Except
            // over a revocation of these same tokens (their refresh token was refused): no
            // other change makes them work again, so it is written over that one.
            const row = await this.store.find(acc.id);
            if (
              row &&
              !acc.stateDirty &&
              state.status === 'revoked' &&
              row.status !== 'revoked' &&
              row.token_version === acc.tokenVersion
            ) {
              acc.storedStatus = row.status;
              acc.stateDirty = true;
              continue;
            }
            if (row && !acc.stateDirty) {
              acc.state = stateFromRow(row);
              acc.storedStatus = row.status;
            }
          }
        } catch (err) {
          acc.stateDirty = true;
          this.warnOnce(
            `state:${acc.id}`,
            `could not store the state of ${acc.provider} account "${acc.name}" (kept in memory, retried): ${(err as Error).message}`,
          );
          break;
        }
      }
    })().finally(() => {
      acc.stateWrite = undefined;
    });
    return acc.stateWrite;
  }

  // --- token refresh -------------------------------------------------------------------------

  /**
   * Whether the token is within `margin` of its expiry; where its lifetime is known, a margin of
   * at most half of it (but not under MIN_REFRESH_MARGIN_MS). A provider whose tokens live 10
   * minutes or less had them refreshed at every sync with the 5-minute margin, each refresh
   * spending a single-use refresh token for a token that was new.
   */
  private needsRefresh(acc: PooledAccount, now: number, margin: number): boolean {
    if (acc.creds === undefined || acc.expiresAt === null) return false;
    let ahead = margin;
    if (acc.tokenSince !== undefined)
      ahead = Math.max(Math.min(margin, (acc.expiresAt - acc.tokenSince) / 2), Math.min(margin, MIN_REFRESH_MARGIN_MS));
    return acc.expiresAt - now <= ahead;
  }

  /**
   * One refresh at a time per account in this process; callers share it. `force`: whatever the
   * expiry; `tokenRefused`: the upstream refused the current token (so a failed refresh leaves
   * the account with none usable, and counts against it; an admin's refresh does not).
   */
  private refresh(acc: PooledAccount, force: boolean, staleVersion?: number, tokenRefused = force): Promise<void> {
    acc.refreshing ??= this.doRefresh(acc, force, staleVersion, tokenRefused).finally(() => {
      acc.refreshing = undefined;
      acc.refreshSlow = undefined;
    });
    return acc.refreshing;
  }

  private async doRefresh(acc: PooledAccount, force: boolean, staleVersion: number | undefined, tokenRefused: boolean): Promise<void> {
    if (!this.vault.configured || !acc.creds) throw new RefreshFailed('the account has no readable credentials');
    if (!this.store.available) return this.refreshLocally(acc, tokenRefused);
    // A lease another process took and neither renewed nor released: it may have refreshed while
    // the database was away and hold the only valid tokens, to be stored at its next sync (the
    // stored refresh token spent). Taken at once, that spent token was sent again and the provider
    // revoked the login; its sync is waited for first.
    // Checked before every try for the lease: one that lapses while this process polls for it
    // (its holder lost the database mid-refresh) is as unrenewed as one found lapsed.
    const waited = new Set<string>();
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      const absent = await this.store.lapsedLeaseOwner(acc.id);
      if (absent !== undefined && absent !== this.owner && !waited.has(absent)) {
        waited.add(absent);
        // Two of its syncs, within what a request waits for a refresh (SUBSCRIPTION_REFRESH_WAIT_MS).
        await sleep(Math.min(2 * syncPeriodMs(this.config.env.SUBSCRIPTION_SYNC_MS) + 1000, LAPSED_LEASE_WAIT_MAX_MS));
        const v = await this.store.tokenVersion(acc.id);
        if (v === undefined) throw new RefreshFailed('the account was removed');
        if (this.storedMovedOn(acc, v)) {
          await this.reloadCredentials(acc);
          return;
        }
      }
      if (await this.store.tryLock(acc.id, this.owner, LOCK_TTL_MS)) break;
      await sleep(LOCK_POLL_MS);
      const v = await this.store.tokenVersion(acc.id);
      if (v === undefined) throw new RefreshFailed('the account was removed');
      if (this.storedMovedOn(acc, v)) {
        await this.reloadCredentials(acc);
        return;
      }
      if (Date.now() > deadline) throw new RefreshFailed('another process has been refreshing this account for too long');
    }
    /** Refreshed tokens this process could not store: the lease stays until they are (flushPending). */
    let holdLease = false;
    try {
      // Under the lease, the stored tokens are the newest: another process may have refreshed
      // just before we got it, and its refresh token is the only one still valid.
      let stored = await this.store.sealedCredentials(acc.id);
      if (!stored) throw new RefreshFailed('the account was removed');
      // Except when this process refreshed them while the database was unreachable and could not
      // store the result: the stored refresh token is then spent (that refresh used it), and ours
      // are the newest. They are stored first, keeping the lease, and refreshed next: this refresh
      // was asked for because of them (refused, or about to expire).
      if (acc.credsDirty && acc.creds && stored.token_version === acc.credsBase) {
        const version = Math.max(acc.credsBase + 1, acc.tokenVersion);
        if (await this.store.commitRefresh(acc.id, this.vault.seal(acc, acc.creds), acc.expiresAt, acc.credsBase, version, true)) {
          acc.tokenVersion = version;
          acc.credsDirty = false;
          acc.credsBase = undefined;
          stored = { ...stored, token_version: version };
        } else {
          // Replaced this instant (an import, which does not wait for the lease): that one wins.
          stored = await this.store.sealedCredentials(acc.id);
          if (!stored) throw new RefreshFailed('the account was removed');
        }
      }
      if (this.storedMovedOn(acc, stored.token_version)) {
        this.adoptCredentials(acc, stored.credentials, stored.token_version, stored.expires_at);
        const stillStale = force
          ? staleVersion !== undefined && acc.tokenVersion === staleVersion
          : this.needsRefresh(acc, Date.now(), this.config.env.SUBSCRIPTION_REFRESH_MARGIN_MS);
        if (!stillStale) return;
      }
      const current = acc.creds;
      if (!current) throw new RefreshFailed('the stored credentials cannot be opened');
      let result;
      try {
        result = await this.refresher.refresh(acc.provider, current);
      } catch (err) {
        this.refreshFailed(acc, err, tokenRefused);
        throw err;
      }
      const version = stored.token_version + 1;
      acc.refreshNotBefore = 0;
      let committed: boolean;
      try {
        committed = await this.store.commitRefresh(
          acc.id,
          this.vault.seal(acc, result.credentials),
          result.expiresAt,
          stored.token_version,
          version,
        );
      } catch (err) {
        this.logger.error(
          `refreshed ${acc.provider} account "${acc.name}" but could not store the new tokens (kept in memory, retried): ${(err as Error).message}`,
        );
        this.keepUnstored(acc, result.credentials, result.expiresAt, stored.token_version, version);
        this.apply(acc.id, { type: 'refreshed' });
        // The stored refresh token is spent: another process taking the lease now would send it,
        // and the provider revokes the account for a reused refresh token.
        holdLease = true;
        return;
      }
      if (!committed) {
        // A login was imported while the refresh was in flight (imports do not wait for the
        // lease). It is newer than the one just refreshed: it stays, and this refresh is dropped.
        const now = await this.store.sealedCredentials(acc.id);
        if (!now) throw new RefreshFailed('the account was removed');
        this.logger.warn(
          `${acc.provider} account "${acc.name}" was given new credentials while it was being refreshed; the refreshed tokens are dropped and the new ones used`,
        );
        this.adoptCredentials(acc, now.credentials, now.token_version, now.expires_at);
        return;
      }
      acc.creds = result.credentials;
      acc.expiresAt = result.expiresAt;
      acc.tokenSince = Date.now();
      acc.tokenVersion = version;
      this.logger.log(`refreshed ${acc.provider} account "${acc.name}"`);
      this.apply(acc.id, { type: 'refreshed' });
    } finally {
      // Kept over tokens this process could not store, also ones from before this refresh (its
      // first step, storing them, may have failed too): the stored refresh token is spent.
      if (!holdLease && !acc.credsDirty) await this.store.unlock(acc.id, this.owner).catch(() => undefined);
    }
  }

  /** The database is unreachable: refresh in this process and store the tokens when it is back. */
  private async refreshLocally(acc: PooledAccount, tokenRefused: boolean): Promise<void> {
    const current = acc.creds;
    if (!current) throw new RefreshFailed('the account has no readable credentials');
    try {
      const result = await this.refresher.refresh(acc.provider, current);
      this.keepUnstored(acc, result.credentials, result.expiresAt, acc.tokenVersion, acc.tokenVersion + 1);
      this.apply(acc.id, { type: 'refreshed' });
    } catch (err) {
      this.refreshFailed(acc, err, tokenRefused);
      throw err;
    }
  }

  /**
   * Whether the stored tokens, at version `stored`, are no longer those this process holds or
   * descends from: another process refreshed them, or a login was imported. Unstored tokens
   * (`credsDirty`) are compared by the stored version they descend from, `credsBase`: that one
   * still being stored is no change, and its refresh token is spent, so it must not be adopted.
   */
  private storedMovedOn(acc: PooledAccount, stored: number): boolean {
    return acc.credsDirty ? stored !== acc.credsBase : stored !== acc.tokenVersion;
  }

  /**
   * Refreshed tokens that could not be stored: used from now on, and written by the next tick.
   * `from`: the stored version they descend from (the first of several refreshes made meanwhile).
   */
  private keepUnstored(acc: PooledAccount, creds: AccountCredentials, expiresAt: number | null, from: number, version: number): void {
    if (!acc.credsDirty) acc.credsBase = from;
    acc.creds = creds;
    acc.expiresAt = expiresAt;
    acc.tokenSince = Date.now();
    acc.tokenVersion = version;
    acc.credsDirty = true;
  }

  private refreshFailed(acc: PooledAccount, err: unknown, tokenRefused: boolean): void {
    acc.refreshNotBefore = Date.now() + REFRESH_RETRY_MS;
    if (err instanceof RefreshRejected) {
      this.apply(acc.id, { type: 'refresh_rejected', message: clip(err.message) });
      return;
    }
    this.logger.warn(`refreshing ${acc.provider} account "${acc.name}" failed: ${(err as Error).message}`);
    const message = clip(`${REFRESH_FAILED}: ${(err as Error).message}`);
    acc.refreshError = message;
    // A failed refresh only matters when it leaves the account without a usable token: it waits
    // for the next try then, without counting as the account's failure (an outage of the token
    // endpoint would otherwise double its cooldowns for as long as it lasts).
    // Otherwise its token may still work (an administrator's refresh of a token with time left,
    // or with no expiry known): the account goes on as it was, and the administrator is told.
    if (tokenRefused || (acc.expiresAt !== null && acc.expiresAt <= Date.now())) this.waitForRefresh(acc, message);
  }

  /** No usable token until the refresh is tried again (REFRESH_RETRY_MS after the last failed). */
  private waitForRefresh(acc: PooledAccount, message: string): void {
    this.apply(acc.id, { type: 'refresh_unavailable', message, until: acc.refreshNotBefore });
  }

  // --- sync with the database ----------------------------------------------------------------

  /** Writes what is pending, re-reads the table, refreshes tokens that are about to expire. */
  tick(): Promise<void> {
    this.ticking ??= this.doTick().finally(() => {
      this.ticking = undefined;
    });
    return this.ticking;
  }

  private async doTick(): Promise<void> {
    if (this.closed || !this.store.available) return;
    try {
      // Before anything reads or refreshes: the stored refresh token of a spooled account is spent.
      await this.storeSpooledTokens();
      await this.flushPending();
      await this.sync();
    } catch (err) {
      this.warnOnce('sync', `could not read subscription accounts: ${(err as Error).message}`);
      return;
    }
    this.warned.delete('sync');
    const now = Date.now();
    const ahead = 2 * this.config.env.SUBSCRIPTION_REFRESH_MARGIN_MS;
    for (const acc of this.accounts.values()) {
      if (isUsable(acc.state, now) && now >= acc.refreshNotBefore && !acc.refreshing && this.needsRefresh(acc, now, ahead)) {
        this.refresh(acc, false).catch(() => undefined);
      }
    }
  }

  /**
   * Stores the tokens a process spooled at shutdown (any process's: replicas may share the
   * directory), each only over the version it descends from; at every sync, before the accounts
   * are read (a running replica stores another's spool too, at its next sync). An outage stops
   * it, the file kept for the next sync (an entry stored already then finds its version taken,
   * harmlessly); a file the database refuses otherwise, or that cannot be read, is set aside
   * (renamed `….unreadable`) so that it never holds back the accounts.
   */
  private async storeSpooledTokens(): Promise<void> {
    let files: string[];
    try {
      files = await this.tokenSpool.files();
    } catch (err) {
      // Not a reason to keep every account unloaded: said, and passed over.
      this.warnOnce('token-spool', `the subscription token spool could not be looked at: ${(err as Error).message}`);
      return;
    }
    for (const file of files) {
      let entries;
      try {
        entries = await this.tokenSpool.read(file);
      } catch (err) {
        if (gone(err)) continue; // another process stored and removed it meanwhile
        const kept = await this.tokenSpool.setAside(file).catch(() => file);
        this.logger.error(`subscription token spool ${kept} could not be read (${(err as Error).message}); set aside, not stored`);
        continue;
      }
      let refused: string | undefined;
      for (const e of entries) {
        let stored: boolean;
        try {
          stored = await this.store.commitRefresh(e.id, e.sealed, e.expiresAt, e.fromVersion, e.toVersion, true);
          if (!stored && (await this.store.tokenVersion(e.id)) === e.toVersion) {
            // stored already, by another process (or a login imported since took that version)
            if (typeof e.owner === 'string' && e.owner !== this.owner) await this.store.unlock(e.id, e.owner).catch(() => undefined);
            continue;
          }
        } catch (err) {
          if (err instanceof StoreUnavailable || isOutage(err)) throw err;
          refused = `${e.provider} account "${e.name}": ${(err as Error).message}`;
          break;
        }
        // The process that spooled them is gone: its lease (held to store them) is released,
        // stored or dropped, or the account's refreshes waited for it to lapse (150 s).
        if (typeof e.owner === 'string' && e.owner !== this.owner) await this.store.unlock(e.id, e.owner).catch(() => undefined);
        if (stored) {
          this.logger.log(`${e.provider} account "${e.name}": stored the tokens spooled at a shutdown`);
        } else
          this.logger.warn(
            `${e.provider} account "${e.name}": the tokens spooled at a shutdown are dropped: the account was deleted, or its stored tokens changed since (a new login)`,
          );
      }
      if (refused) {
        const kept = await this.tokenSpool.setAside(file).catch(() => file);
        this.logger.error(`subscription token spool ${kept}: the database refused it (${refused}); set aside, the rest of it not stored`);
        continue;
      }
      await this.tokenSpool.remove(file).catch((err: Error) => {
        if (!gone(err)) this.logger.error(`could not remove ${file}: ${err.message}`);
      });
    }
  }

  /**
   * Writes every account's pending state and unstored tokens. An account whose tokens the
   * database refuses (not an outage) is said and passed over: stopping there left every later
   * account's tokens unstored and their leases unrenewed, and the sync undone, tick after tick.
   * An outage stops it: the rest would only wait for the same answer.
   */
  private async flushPending(): Promise<void> {
    for (const acc of this.accounts.values()) {
      if (acc.stateDirty) await this.flushState(acc);
      try {
        await this.flushTokens(acc);
        this.warned.delete(`tokens:${acc.id}`);
      } catch (err) {
        if (err instanceof StoreUnavailable || isOutage(err)) throw err;
        this.warnOnce(
          `tokens:${acc.id}`,
          `could not store the refreshed tokens of ${acc.provider} account "${acc.name}" (kept in memory with its refresh lease, retried at each sync): ${(err as Error).message}`,
        );
      }
    }
  }

  private async flushTokens(acc: PooledAccount): Promise<void> {
    if (!acc.credsDirty || !this.vault.configured || !acc.creds || acc.refreshing) return;
    // Written only over the tokens they descend from: if the stored ones changed since (a
    // login imported meanwhile), those win and ours are dropped. Another process may hold
    // the refresh lease meanwhile: it is left alone, and only this process's own (from the
    // refresh whose tokens these are, if the database went away before its release) let go.
    const { fromVersion: from, toVersion: version } = pendingVersions(acc);
    // The lease this process kept for them is renewed while they wait (it would lapse after
    // LOCK_TTL_MS, and another process refresh with the spent token).
    await this.store.tryLock(acc.id, this.owner, LOCK_TTL_MS);
    if (await this.store.commitRefresh(acc.id, this.vault.seal(acc, acc.creds), acc.expiresAt, from, version, true)) {
      acc.tokenVersion = version;
      // Not fatal: the tokens are stored, and a lease left behind lapses on its own.
      await this.store.unlock(acc.id, this.owner).catch(() => undefined);
    } else {
      await this.store.unlock(acc.id, this.owner).catch(() => undefined);
      const now = await this.store.sealedCredentials(acc.id);
      if (now) {
        this.logger.warn(
          `${acc.provider} account "${acc.name}" was given new credentials while its refreshed tokens could not be stored; those are dropped and the new ones used`,
        );
        this.adoptCredentials(acc, now.credentials, now.token_version, now.expires_at);
      }
    }
    acc.credsDirty = false;
    acc.credsBase = undefined;
  }

  /** Re-reads every account (without tokens unless they changed). */
  async sync(): Promise<void> {
    const marks = new Map([...this.accounts.values()].map((a) => [a.id, a.changes]));
    const rows = await this.store.list();
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.id);
      let acc = this.accounts.get(row.id);
      if (!acc) {
        acc = {
          id: row.id,
          provider: row.provider,
          name: row.name,
          createdAt: row.created_at.getTime(),
          state: stateFromRow(row),
          storedStatus: row.status,
          expiresAt: row.expires_at ? row.expires_at.getTime() : null,
          externalAccountId: row.external_account_id,
          tokenVersion: -1,
          refreshNotBefore: 0,
          stateDirty: false,
          credsDirty: false,
          changes: 0,
        };
        this.accounts.set(row.id, acc);
      } else if (!acc.stateDirty && !acc.stateWrite && acc.changes === marks.get(acc.id)) {
        acc.state = stateFromRow(row);
        acc.storedStatus = row.status;
      }
      acc.name = row.name;
      acc.externalAccountId = row.external_account_id;
      if (row.token_version !== acc.tokenVersion && !acc.refreshing && !acc.credsDirty) await this.reloadCredentials(acc);
    }
    for (const id of [...this.accounts.keys()]) if (!seen.has(id)) this.accounts.delete(id);
    for (const p of SUBSCRIPTION_PROVIDERS) {
      this.byProvider.set(
        p,
        // A stable order (accounts of one import share a timestamp), so rotation is predictable.
        [...this.accounts.values()]
          .filter((a) => a.provider === p)
          .sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name) || a.id.localeCompare(b.id)),
      );
    }
  }

  private async reloadCredentials(acc: PooledAccount): Promise<void> {
    const stored = await this.store.sealedCredentials(acc.id);
    if (stored) this.adoptCredentials(acc, stored.credentials, stored.token_version, stored.expires_at, stored.last_refresh_at);
  }

  /** Takes the stored tokens, dropping any this process could not store (they lost to these). */
  private adoptCredentials(acc: PooledAccount, sealed: string, version: number, expiresAt: Date | null, refreshedAt?: Date | null): void {
    acc.credsDirty = false;
    acc.credsBase = undefined;
    // New to this process (at start, or an account just added): made when a refresh last stored
    // tokens, if one did (else unknown: an import's). Without it, each replica that started
    // refreshed again the short-lived token another had just refreshed.
    acc.tokenSince = acc.tokenVersion >= 0 ? Date.now() : refreshedAt ? refreshedAt.getTime() : undefined;
    acc.tokenVersion = version;
    acc.expiresAt = expiresAt ? expiresAt.getTime() : null;
    if (!this.vault.configured) {
      acc.creds = undefined;
      acc.credsError = 'SUBSCRIPTION_ENCRYPTION_KEY is not set';
      this.warnOnce('nokey', 'subscription accounts are stored but SUBSCRIPTION_ENCRYPTION_KEY is not set: none can be used');
      return;
    }
    try {
      acc.creds = this.vault.open(acc, sealed);
      acc.credsError = undefined;
    } catch (err) {
      acc.creds = undefined;
      acc.credsError = (err as Error).message;
      this.warnOnce(
        `creds:${acc.id}:${version}`,
        `${acc.provider} account "${acc.name}": stored credentials cannot be opened (${acc.credsError}); it is skipped`,
      );
    }
  }

  /** Waits for this process's pending state writes (of one account, or all), so an admin read or change sees them. */
  async settle(id?: string): Promise<void> {
    const list = id === undefined ? [...this.accounts.values()] : [this.accounts.get(id)];
    await Promise.allSettled(list.map((a) => a?.stateWrite).filter((p): p is Promise<void> => p !== undefined));
  }

  /** Picks up a change made through the admin API at once (other processes see it at their next sync). */
  async changed(): Promise<void> {
    if (this.store.available && this.vault.configured) await this.sync();
  }

  /**
   * Admin: refresh an account's tokens now, whatever their expiry. Resolves when refreshed;
   * rejects with `RefreshRejected` (the account is now revoked) or `RefreshFailed`.
   */
  async refreshNow(id: string): Promise<boolean> {
    await this.sync();
    const acc = this.accounts.get(id);
    if (!acc) return false;
    const version = acc.tokenVersion;
    // Asked for, not forced by a refused token: a failure leaves the current token in use.
    await this.refresh(acc, true, version, false);
    if (acc.tokenVersion === version) throw new RefreshFailed('no new token');
    return true;
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.logger.warn(message);
  }
}

function lease(acc: PooledAccount): AccountLease {
  return {
    id: acc.id,
    provider: acc.provider,
    name: acc.name,
    accessToken: acc.creds!.accessToken,
    externalAccountId: acc.externalAccountId,
    tokenVersion: acc.tokenVersion,
  };
}

function abortedError(provider: SubscriptionProvider): UpstreamError {
  return new UpstreamError({ failure: 'aborted', message: 'the request was cancelled', provider: `${provider}_sub` });
}

function clip(s: string): string {
  return s.length > 500 ? `${s.slice(0, 497)}...` : s;
}

function countBy(values: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

/**
 * A request's wait for a refresh: until it is done, the client leaves, or `waitMs`. The refresh
 * itself goes on (up to REFRESH_TIMEOUT_MS; its answer is never dropped) while the request tries
 * another account.
 */
async function waitForRefresh(refresh: Promise<void>, signal: AbortSignal | undefined, waitMs: number): Promise<void> {
  const waited = AbortSignal.timeout(waitMs);
  await raceAbort(refresh, signal ? AbortSignal.any([signal, waited]) : waited, () =>
    signal?.aborted ? new Error('aborted') : new RefreshFailed(`the token refresh took over ${waitMs / 1000} s (it goes on)`),
  );
}

/**
 * Unstored tokens (`credsDirty`) as they are to be stored: over the version they descend from,
 * as the next version (or the one already given them in memory, if later).
 */
function pendingVersions(acc: PooledAccount): { fromVersion: number; toVersion: number } {
  const fromVersion = acc.credsBase ?? acc.tokenVersion - 1;
  return { fromVersion, toVersion: Math.max(fromVersion + 1, acc.tokenVersion) };
}

/** A file another process removed (or renamed) meanwhile. */
function gone(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}
