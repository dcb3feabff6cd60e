import type { SchedulerRegistry } from '@nestjs/schedule';
import type { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { ModelRegistry } from '../config/model-registry.service';
import { EndpointHealthService } from './endpoint-health.service';
import type { RouteStateService } from './route-state.service';
import type { SharedStateService } from './shared-state.service';

describe('EndpointHealthService', () => {
  it('drops the verdict of a probe that ends after a reload turned the checks off', async () => {
    let healthCheckSeconds = 2;
    const route = { id: 'r', kind: 'openai_compat' };
    const registry = {
      current: () => ({ routing: { healthCheckSeconds, healthCheckTimeoutMs: 5000 }, models: [{ id: 'm', routes: [route] }] }),
    };
    let answer!: (r: { ok: boolean; detail?: string }) => void;
    const adapters = { get: () => ({ probe: () => new Promise((resolve) => (answer = resolve)) }) };
    const setHealth = jest.fn(() => true);
    const clearHealth = jest.fn();
    const state = { get: () => ({ endpoint: { key: 'http://b' } }), setHealth, clearHealth, findEndpoint: () => undefined };
    const shared = { claimProbes: (keys: string[]) => Promise.resolve(keys), publishHealth: jest.fn() };
    const intervals = new Map<string, NodeJS.Timeout>();
    const scheduler = {
      doesExist: (_: string, name: string) => intervals.has(name),
      deleteInterval: (name: string) => {
        clearInterval(intervals.get(name));
        intervals.delete(name);
      },
      addInterval: (name: string, t: NodeJS.Timeout) => intervals.set(name, t),
    };
    const health = new EndpointHealthService(
      registry as unknown as ModelRegistry,
      adapters as unknown as AdapterRegistry,
      state as unknown as RouteStateService,
      shared as unknown as SharedStateService,
      scheduler as unknown as SchedulerRegistry,
    );
    try {
      health.configure(); // probes at once; the probe hangs
      await new Promise((r) => setImmediate(r));
      expect(answer).toBeDefined();
      healthCheckSeconds = 0;
      health.configure(); // a reload: checks off, health cleared
      expect(clearHealth).toHaveBeenCalled();
      answer({ ok: false, detail: 'no answer within 5000 ms' });
      await new Promise((r) => setImmediate(r));
      // Nothing probes any more: a verdict kept now would never be undone.
      expect(setHealth).not.toHaveBeenCalled();
      expect(shared.publishHealth).not.toHaveBeenCalled();
    } finally {
      health.onApplicationShutdown();
    }
  });
});
