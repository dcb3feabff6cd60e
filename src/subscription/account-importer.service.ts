import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Injectable, Logger } from '@nestjs/common';
import { ConflictError } from '../common/resource.errors';
import { jsonSyntaxError } from '../common/json-body';
import { AppConfig } from '../config/app-config';
import { type AccountInput, loginFingerprint, parseAccounts } from './account-import';
import { initialState, transition } from './account-state';
import { AccountStore, stateColumns, stateFromRow } from './account-store.service';
import { CredentialVault } from './credential-vault.service';
import type { SubscriptionAccount } from './entities/subscription-account.entity';
import type { SubscriptionProvider } from './subscription.types';

export type ImportOutcome = 'added' | 'updated' | 'unchanged';

const LOGIN_IN_USE = 'login_in_use';

/** Where accounts come from: an import file (read at every start) or the admin API. */
export type ImportSource = 'file' | 'admin';

export interface ImportSummary {
  added: string[];
  updated: string[];
  unchanged: string[];
  errors: string[];
}

/**
 * Puts accounts from import files and admin requests into the table. A different refresh token
 * than the one last imported means a new login, which replaces the credentials and makes a
 * revoked or cooling account active again.
 *
 * Import files are read at every start of every process (a restarted worker too), so a file's
 * entry is applied once: not if its login was ever applied to that account name, by any process
 * (`subscription_account_imports`). Refresh tokens are single-use, so such a login is older than
 * what is stored — the tokens rotated since, or an admin imported a newer login — or was deleted
 * by an admin; applying it again put a spent token back (the next refresh failed with
 * invalid_grant and revoked the account) and brought deleted accounts back. The admin API's
 * import is an operator's explicit act and is applied unless the login is the stored one.
 */
@Injectable()
export class AccountImporter {
  private readonly logger = new Logger('SubscriptionImport');
  /** The tail of the imports and additions in this process, which run one at a time. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly config: AppConfig,
    private readonly store: AccountStore,
    private readonly vault: CredentialVault,
  ) {}

  /** The two files named by SUBSCRIPTION_CLAUDE_ACCOUNTS_FILE and SUBSCRIPTION_CODEX_ACCOUNTS_FILE, where they exist. */
  async importFiles(): Promise<void> {
    const env = this.config.env;
    for (const [provider, file] of [
      ['claude', env.SUBSCRIPTION_CLAUDE_ACCOUNTS_FILE],
      ['codex', env.SUBSCRIPTION_CODEX_ACCOUNTS_FILE],
    ] as const) {
      const path = resolve(file);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.logger.warn(`cannot read ${path}: ${(err as Error).message}`);
        continue;
      }
      if (!this.vault.configured) {
        this.logger.warn(`${path} is not imported: SUBSCRIPTION_ENCRYPTION_KEY is not set, and tokens are only stored encrypted`);
        continue;
      }
      let data: unknown;
      try {
        // A byte-order mark (as some Windows editors save) is no part of the JSON.
        data = JSON.parse(text.replace(/^\uFEFF/, ''));
      } catch (err) {
        this.logger.warn(`${path} is not valid JSON (${jsonSyntaxError(err)}); nothing imported from it`);
        continue;
      }
      try {
        const s = await this.importData(provider, data, 'file');
        for (const e of s.errors) this.logger.warn(`${path}: ${e}`);
        if (s.added.length || s.updated.length)
          this.logger.log(
            `${path}: ${s.added.length} ${provider} accounts added, ${s.updated.length} given new credentials, ${s.unchanged.length} unchanged`,
          );
      } catch (err) {
        this.logger.warn(`importing ${path} failed: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Runs `fn` after the imports and additions before it in this process: each looks for the
   * login among the stored accounts and then stores it, and two of one login under two names,
   * interleaved, would both find it free. (Between replicas nothing orders them.)
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writes.then(fn, fn);
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** Parses and stores; entries with problems are listed in `errors` and skipped. */
  importData(provider: SubscriptionProvider, data: unknown, source: ImportSource): Promise<ImportSummary> {
    this.vault.require();
    return this.exclusive(() => this.importParsed(provider, data, source));
  }

  private async importParsed(provider: SubscriptionProvider, data: unknown, source: ImportSource): Promise<ImportSummary> {
    const { accounts, errors } = parseAccounts(provider, data);
    const summary: ImportSummary = { added: [], updated: [], unchanged: [], errors };
    for (const input of accounts) {
      let outcome: ImportOutcome;
      try {
        outcome = await this.upsert(input, source);
      } catch (err) {
        if (!(err instanceof ConflictError) || err.code !== LOGIN_IN_USE) throw err;
        summary.errors.push(`${input.name}: ${err.message}`);
        continue;
      }
      summary[outcome].push(input.name);
    }
    return summary;
  }

  /**
   * Refuses a login that another account of the provider already holds (a 409, code
   * `login_in_use`): two accounts on one login spend each other's refresh tokens (each refresh
   * rotates it), and the one left with a spent token is revoked, at OpenAI perhaps the login too.
   */
  async refuseLoginInUse(input: AccountInput, fingerprints: readonly string[]): Promise<void> {
    const other = (await this.store.findByImportFingerprint(input.provider, fingerprints)).find((r) => r.name !== input.name);
    if (other)
      throw new ConflictError(
        `this login (its refresh token) is the one ${input.provider} account "${other.name}" (id ${other.id}) was given; two accounts on one login spend each other's refresh tokens`,
        LOGIN_IN_USE,
      );
  }

  /** Stores one account: new, new credentials for an existing one, or nothing when already imported. */
  async upsert(input: AccountInput, source: ImportSource): Promise<ImportOutcome> {
    const fingerprint = loginFingerprint(input.provider, input.credentials.refreshToken);
    // Logins recorded before the fingerprint stopped depending on the key are recognised by the
    // keyed one they were recorded under (while the key is still the one they were recorded
    // with), and recorded again under the current one, so that a key rotation later does not
    // make them new.
    const known = [fingerprint, this.vault.legacyFingerprint(input.credentials.refreshToken)];
    if (source === 'file') {
      const seen = await this.store.importedFingerprints(input.provider, input.name, known);
      if (seen.length > 0 && !seen.includes(fingerprint)) await this.store.rememberImport(input.provider, input.name, fingerprint);
      if (seen.length > 0) return 'unchanged';
    }
    await this.refuseLoginInUse(input, known);
    // Each write is conditional (the unique name, the token version): when another process got
    // there first, look again. A few rounds at most, unless the row keeps changing under us.
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await this.store.findByName(input.provider, input.name);
      if (existing?.import_fingerprint && known.includes(existing.import_fingerprint)) {
        // Also records a login applied before imports were remembered (or by a process that
        // stopped between the write and the record).
        await this.store.rememberImport(input.provider, input.name, fingerprint);
        return 'unchanged';
      }
      if (existing) {
        if (await this.update(existing, input, fingerprint)) return 'updated';
        continue;
      }
      try {
        await this.insert(input, fingerprint);
        return 'added';
      } catch (err) {
        // Another process imported the same name at the same moment (unique provider+name):
        // look again. Any other failure is itself.
        if (!(await this.store.findByName(input.provider, input.name))) throw err;
      }
    }
    // Importing the same entries again is safe: what was stored is then unchanged.
    throw new ConflictError(
      `${input.provider} account "${input.name}" was changed by another import while this one stored it; send the import again`,
      'account_import_conflict',
    );
  }

  async insert(input: AccountInput, fingerprint: string): Promise<SubscriptionAccount> {
    const id = `acc_${randomBytes(12).toString('hex')}`;
    const row: Partial<SubscriptionAccount> = {
      id,
      provider: input.provider,
      name: input.name,
      credentials: this.vault.seal({ provider: input.provider, id }, input.credentials),
      token_version: 1,
      import_fingerprint: fingerprint,
      ...this.details(input),
      ...stateColumns(initialState()),
    };
    await this.store.insert(row);
    await this.store.rememberImport(input.provider, input.name, fingerprint);
    return row as SubscriptionAccount;
  }

  /** False when the row changed since it was read (another import, a refresh): nothing written. */
  private async update(existing: SubscriptionAccount, input: AccountInput, fingerprint: string): Promise<boolean> {
    const state = transition(stateFromRow(existing), { type: 'credentials_replaced' }, Date.now(), {
      cooldownMs: 0,
      maxCooldownMs: 1,
      failureThreshold: 1,
    });
    const sealed = this.vault.seal(existing, input.credentials);
    const fields = { import_fingerprint: fingerprint, ...this.details(input) };
    if (!(await this.store.replaceCredentials(existing.id, existing.token_version, sealed, fields, state))) return false;
    await this.store.rememberImport(input.provider, input.name, fingerprint);
    return true;
  }

  private details(input: AccountInput): Partial<SubscriptionAccount> {
    return {
      external_account_id: input.externalAccountId,
      email: input.email,
      plan_type: input.planType,
      expires_at: input.expiresAt === null ? null : new Date(input.expiresAt),
    };
  }
}
