import { Module } from '@nestjs/common';
import { AdaptersModule } from '../adapters/adapters.module';
import { ClaudeSubAdapter } from '../adapters/claude-sub/claude-sub.adapter';
import { CodexSubAdapter } from '../adapters/codex-sub/codex-sub.adapter';
import { StorageModule } from '../storage/storage.module';
import { AccountAdmin } from './account-admin.service';
import { AccountImporter } from './account-importer.service';
import { AccountPool } from './account-pool.service';
import { AccountStore } from './account-store.service';
import { CredentialVault } from './credential-vault.service';
import { OAuthRefresher } from './oauth-refresh.service';
import { TokenSpool } from './token-spool';

/**
 * OAuth subscription accounts (Claude Code, Codex): the account pools, credential refresh, the
 * account state machine, and the adapters that spend them (`codex_sub`, `claude_sub`). The
 * adapters are found by the adapter registry like any other `@LlmAdapter`.
 */
@Module({
  imports: [AdaptersModule, StorageModule],
  providers: [
    CredentialVault,
    AccountStore,
    OAuthRefresher,
    AccountImporter,
    TokenSpool,
    AccountPool,
    AccountAdmin,
    CodexSubAdapter,
    ClaudeSubAdapter,
  ],
  exports: [AccountPool, AccountAdmin, CredentialVault],
})
export class SubscriptionModule {}
