import { Module } from '@nestjs/common';
import { RoutingModule } from '../routing/routing.module';
import { AdminAuditInterceptor } from './admin-audit.interceptor';
import { AdminGuard } from './admin.guard';
import { RoutingAdminController } from './routing-admin.controller';
import { StorageModule } from '../storage/storage.module';
import { SubscriptionModule } from '../subscription/subscription.module';
import { ApiKeysController } from './api-keys.controller';
import { StatsController } from './stats.controller';
import { SubscriptionAccountsController } from './subscription-accounts.controller';

/** /admin/*, behind ADMIN_TOKEN. */
@Module({
  imports: [RoutingModule, StorageModule, SubscriptionModule],
  controllers: [RoutingAdminController, ApiKeysController, StatsController, SubscriptionAccountsController],
  providers: [AdminGuard, AdminAuditInterceptor],
  exports: [AdminGuard],
})
export class AdminModule {}
