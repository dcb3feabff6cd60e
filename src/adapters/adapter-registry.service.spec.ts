import type { DiscoveryService } from '@nestjs/core';
import { AdapterRegistry } from './adapter-registry.service';
import type { LlmAdapter } from './llm-adapter';

class MockAdapter {}
class OllamaChatAdapter {}

describe('AdapterRegistry', () => {
  const registry = () => new AdapterRegistry({} as DiscoveryService);

  it('refuses a second adapter for a kind already claimed, naming both', () => {
    const r = registry();
    r.register('mock', new MockAdapter() as unknown as LlmAdapter);
    expect(() => r.register('mock', new OllamaChatAdapter() as unknown as LlmAdapter)).toThrow(
      'adapter kind "mock" is claimed by both MockAdapter (kind mock) and OllamaChatAdapter (kind mock)',
    );
  });

  it('refuses an alias that is another adapter’s kind', () => {
    const r = registry();
    r.register('openai_compat', new MockAdapter() as unknown as LlmAdapter, ['vllm']);
    expect(() => r.register('vllm', new OllamaChatAdapter() as unknown as LlmAdapter)).toThrow(
      /claimed by both MockAdapter \(kind openai_compat\)/,
    );
  });

  it('takes the same adapter found twice (a module imported in two places)', () => {
    const r = registry();
    const a = new MockAdapter() as unknown as LlmAdapter;
    r.register('mock', a, ['demo']);
    r.register('mock', a, ['demo']);
    expect(r.get('demo')).toBe(a);
  });
});
