import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { AdaptersModule } from '../adapters/adapters.module';
import { RouteExecutor } from './route-executor.service';
import { RoutingManager } from './routing-manager.service';
import { FixedRatioStrategy } from './strategies/fixed-ratio.strategy';
import { PriorityStrategy } from './strategies/priority.strategy';
import { WeightedStrategy } from './strategies/weighted.strategy';

@Module({
  imports: [DiscoveryModule, AdaptersModule],
  providers: [RoutingManager, RouteExecutor, WeightedStrategy, FixedRatioStrategy, PriorityStrategy],
  exports: [RoutingManager, RouteExecutor],
})
export class RoutingModule {}
