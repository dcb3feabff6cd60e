import { Injectable } from '@nestjs/common';
import type { RouteDef } from '../../config/registry.types';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';

/** Routes in listed order: the next one only when the one before failed. */
@Injectable()
@RoutingStrategy({ name: 'priority', params: [] })
export class PriorityStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    return [...input.routes];
  }

  shares(input: StrategyInput): number[] {
    return input.routes.map((_, i) => (i === 0 ? 1 : 0));
  }
}
