import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { LlmAdapter } from './llm-adapter';

/** Adapters by route kind and alias, found once at start-up. */
@Injectable()
export class AdapterRegistry implements OnModuleInit {
  private readonly logger = new Logger('AdapterRegistry');
  private readonly byKind = new Map<string, LlmAdapter>();
  /** The route options each adapter declared it reads, by its kind. */
  private readonly declared = new Map<string, readonly string[]>();
  /** alias → canonical kind */
  private readonly canonical = new Map<string, string>();

  constructor(private readonly discovery: DiscoveryService) {}

  onModuleInit(): void {
    for (const wrapper of this.discovery.getProviders({ metadataKey: LlmAdapter.KEY })) {
      const opts = this.discovery.getMetadataByDecorator(LlmAdapter, wrapper);
      if (!opts || !wrapper.instance) continue;
      this.register(opts.kind, wrapper.instance as LlmAdapter, opts.aliases ?? []);
      if (opts.options) this.declared.set(opts.kind, opts.options);
    }
    this.logger.log(`adapters: ${[...this.canonical.keys()].sort().join(', ')}`);
  }

  register(kind: string, adapter: LlmAdapter, aliases: string[] = []): void {
    for (const name of [kind, ...aliases]) {
      const owner = this.canonical.get(name);
      // The same kind from another adapter would quietly take over every route of that kind.
      const other = owner === undefined ? undefined : this.byKind.get(owner);
      if (other !== undefined && other !== adapter)
        throw new Error(
          `adapter kind "${name}" is claimed by both ${describe(other, owner!)} and ${describe(adapter, kind)}: give one of them another kind`,
        );
      this.canonical.set(name, kind);
    }
    this.byKind.set(kind, adapter);
  }

  /** The adapter for a route kind or alias. */
  get(kind: string): LlmAdapter | undefined {
    const k = this.canonical.get(kind);
    return k === undefined ? undefined : this.byKind.get(k);
  }

  /** `vllm` → `openai_compat`. */
  canonicalKind(kind: string): string | undefined {
    return this.canonical.get(kind);
  }

  /** The route options the adapter of `kind` reads, if it declared them. */
  optionsOf(kind: string): readonly string[] | undefined {
    const k = this.canonical.get(kind);
    return k === undefined ? undefined : this.declared.get(k);
  }

  kinds(): string[] {
    return [...this.canonical.keys()].sort();
  }
}

/** An adapter as an operator can find it: its class and, where it differs from the name, its kind. */
function describe(adapter: LlmAdapter, kind: string): string {
  const cls = (adapter as object).constructor?.name;
  return cls && cls !== 'Object' ? `${cls} (kind ${kind})` : `kind ${kind}`;
}
