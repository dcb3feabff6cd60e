import { Injectable } from '@nestjs/common';
import type { ModelDef, RouteDef } from '../../config/registry.types';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';
import { shares, smoothWeightedPick } from '../weights';

interface RotationState {
  readonly position: Map<RouteDef, number>;
  /** Smooth-WRR scores, by position in the model's route list. */
  readonly current: number[];
}

/**
 * Smooth weighted round-robin: deterministic turns in proportion to `weight`, interleaved. Routes
 * that are unavailable sit out without disturbing the others' turns; the rest follow as fallbacks
 * in listed order, zero-weight routes last.
 */
@Injectable()
@RoutingStrategy({ name: 'round_robin', params: [] })
export class RoundRobinStrategy implements RoutingStrategy {
  // Per model object: a reload brings new objects and so starts a fresh rotation.
  private readonly state = new WeakMap<ModelDef, RotationState>();

  plan(input: StrategyInput): RouteDef[] {
    const st = this.rotation(input.model);
    const slots = input.routes.map((r) => st.position.get(r) ?? -1);
    const scores = slots.map((s) => (s >= 0 ? st.current[s] : 0));
    const first = smoothWeightedPick(
      input.routes.map((r) => r.weight),
      scores,
    );
    slots.forEach((s, k) => {
      if (s >= 0) st.current[s] = scores[k];
    });
    const rest = input.routes.filter((_, i) => i !== first);
    const ordered = [...rest.filter((r) => r.weight > 0), ...rest.filter((r) => !(r.weight > 0))];
    return first >= 0 ? [input.routes[first], ...ordered] : ordered;
  }

  shares(input: StrategyInput): number[] {
    return shares(input.routes.map((r) => r.weight));
  }

  private rotation(model: ModelDef): RotationState {
    let st = this.state.get(model);
    if (!st) {
      st = { position: new Map(model.routes.map((r, i) => [r, i])), current: model.routes.map(() => 0) };
      this.state.set(model, st);
    }
    return st;
  }
}
