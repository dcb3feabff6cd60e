import { Module } from '@nestjs/common';
import { RoutingModule } from '../routing/routing.module';
import { AdminGuard } from './admin.guard';
import { RoutingAdminController } from './routing-admin.controller';
import { SubscriptionModule } from '../subscription/subscription.module';
import { SubscriptionAccountsController } from './subscription-accounts.controller';

/** /admin/*, behind ADMIN_TOKEN. */
@Module({
  imports: [RoutingModule, SubscriptionModule],
  controllers: [RoutingAdminController, SubscriptionAccountsController],
  providers: [AdminGuard],
  exports: [AdminGuard],
})
export class AdminModule {}
