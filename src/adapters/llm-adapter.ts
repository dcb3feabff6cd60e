import { DiscoveryService } from '@nestjs/core';
import type { UpstreamTimeouts } from '../config/app-config';
import type { RouteDef } from '../config/registry.types';
import type { ChatChunk, ChatRequest, ChatResponse } from '../common/chat.types';

/** What an adapter gets to know about the call it makes. */
export interface CallContext {
  readonly requestId: string;
  /** Aborted when the client leaves, a deadline passes, or the executor gives up on this attempt. */
  readonly signal: AbortSignal;
  /** Effective timeouts for this route (global defaults overlaid with the route's own). */
  readonly timeouts: UpstreamTimeouts;
  /** The model id the client asked for. */
  readonly publicModel: string;
}

export interface ProbeResult {
  ok: boolean;
  latencyMs: number;
  detail?: string;
}

/**
 * One wire protocol. Adapters translate the canonical (OpenAI chat) request to their provider's
 * format and back, and throw `UpstreamError` for every failure so the executor can decide about
 * retries in one place. `stream` must not yield until the upstream has accepted the request, and
 * must stop the upstream call when its iterator is returned early or `ctx.signal` aborts.
 */
export interface LlmAdapter {
  complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse>;
  stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncIterable<ChatChunk>;
  probe?(route: RouteDef, signal: AbortSignal): Promise<ProbeResult>;
  /** Problems with a route's settings (missing base_url, bad option), found at load time. */
  validateRoute?(route: RouteDef): string[];
}

export interface LlmAdapterOptions {
  /** The `kind:` of routes this adapter serves. */
  kind: string;
  /** Other `kind:` values that mean this adapter (e.g. `vllm` for `openai_compat`). */
  aliases?: string[];
}

/**
 * Marks a provider class as an adapter; `AdapterRegistry` finds every one at start-up, in any
 * module. Usage: `@LlmAdapter({ kind: 'gemini' })`.
 */
export const LlmAdapter = DiscoveryService.createDecorator<LlmAdapterOptions>();
