import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { TerminusModule } from '@nestjs/terminus';
import { AdaptersModule } from '../adapters/adapters.module';
import { EndpointHealthService } from './endpoint-health.service';
import { RouteExecutor } from './route-executor.service';
import { RouteStateService } from './route-state.service';
import { RoutingManager } from './routing-manager.service';
import { RoutingReloadService } from './routing-reload.service';
import { RoutingHealthIndicator } from './routing.health';
import { SharedStateService } from './shared-state.service';
import { CostStrategy } from './strategies/cost.strategy';
import { FixedRatioStrategy } from './strategies/fixed-ratio.strategy';
import { LeastLatencyStrategy } from './strategies/least-latency.strategy';
import { PriorityStrategy } from './strategies/priority.strategy';
import { RoundRobinStrategy } from './strategies/round-robin.strategy';
import { WeightedStrategy } from './strategies/weighted.strategy';

@Module({
  imports: [DiscoveryModule, AdaptersModule, ScheduleModule.forRoot(), TerminusModule],
  providers: [
    RoutingManager,
    RouteExecutor,
    RouteStateService,
    EndpointHealthService,
    SharedStateService,
    RoutingHealthIndicator,
    RoutingReloadService,
    WeightedStrategy,
    FixedRatioStrategy,
    PriorityStrategy,
    RoundRobinStrategy,
    LeastLatencyStrategy,
    CostStrategy,
  ],
  exports: [RoutingManager, RouteExecutor, RouteStateService, RoutingHealthIndicator, RoutingReloadService],
})
export class RoutingModule {}
