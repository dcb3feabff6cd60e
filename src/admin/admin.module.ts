import { Module } from '@nestjs/common';
import { RoutingModule } from '../routing/routing.module';
import { AdminGuard } from './admin.guard';
import { RoutingAdminController } from './routing-admin.controller';

/** /admin/*, behind ADMIN_TOKEN. */
@Module({
  imports: [RoutingModule],
  controllers: [RoutingAdminController],
  providers: [AdminGuard],
  exports: [AdminGuard],
})
export class AdminModule {}
