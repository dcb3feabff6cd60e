import { DiscoveryService } from '@nestjs/core';
import type { UpstreamTimeouts } from '../config/app-config';
import type { RouteDef } from '../config/registry.types';
import type { ChatChunk, ChatRequest, ChatResponse } from '../common/chat.types';
import type { CompletionRequest } from '../common/completion.types';
import type { EmbeddingsRequest, EmbeddingsResponse } from '../common/embedding.types';

/** What an adapter gets to know about the call it makes. */
export interface CallContext {
  readonly requestId: string;
  /** Aborted when the client leaves, a deadline passes, or the executor gives up on this attempt. */
  readonly signal: AbortSignal;
  /** Effective timeouts for this route (global defaults overlaid with the route's own). */
  readonly timeouts: UpstreamTimeouts;
  /** The model id the client asked for. */
  readonly publicModel: string;
  /**
   * What the adapter says about who served (for the request log): the subscription account that
   * answered, and every account the call tried, in order.
   */
  readonly served: { account?: string; tried?: string[] };
  /**
   * For streams: called by the adapter once the upstream accepted the call (its 2xx headers),
   * before the first item. The gateway keeps its keepalives back until then, so that a failure
   * before it still reaches the client with its own status.
   */
  readonly accepted?: () => void;
  /**
   * For one-shot calls: called once the request has been written to the upstream (adapters pass
   * it to UpstreamClient as `sent`, through `callInfo`). Their answer comes whole, so nothing
   * earlier says the upstream is working on the prompt; a client that leaves from here on is
   * billed for it, as a stream's is once accepted.
   */
  readonly dispatched?: () => void;
}

/**
 * An Anthropic Messages request as the client sent it to the Anthropic surface, for adapters that
 * relay it unchanged except for the model and the credentials (identity passthrough).
 */
export interface MessagesCall {
  /** The client's body (`model` is replaced by the route's upstream model). */
  readonly body: Readonly<Record<string, unknown>>;
  /** The client's `anthropic-beta` values, merged with the route's. */
  readonly betas: readonly string[];
  /** The client's `anthropic-version`. */
  readonly version?: string;
}

/** One event of a relayed Messages stream: its name and its data exactly as the upstream sent them. */
export interface MessagesEvent {
  readonly event: string;
  readonly data: string;
}

/** A relayed non-streaming Messages answer: the upstream's JSON as sent, and parsed (for usage). */
export interface MessagesReply {
  readonly text: string;
  readonly message: Readonly<Record<string, unknown>>;
}

/**
 * What an adapter whose wire protocol is Anthropic's Messages API offers the Anthropic surface:
 * the client's request relayed as it is (model and credentials replaced), its answer and events
 * relayed as they come. Failures are `UpstreamError`s, as everywhere; an `error` event in a
 * stream is thrown as one (the surface decides between failover and an in-band error).
 */
export interface MessagesRelay {
  send(call: MessagesCall, route: RouteDef, ctx: CallContext): Promise<MessagesReply>;
  stream(call: MessagesCall, route: RouteDef, ctx: CallContext): AsyncIterable<MessagesEvent>;
  /** `POST /v1/messages/count_tokens`: the upstream's count of the request's input tokens. */
  countTokens(call: MessagesCall, route: RouteDef, ctx: CallContext): Promise<number>;
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
  /**
   * Reads what OpenRouter reads beside OpenAI's chat request: Anthropic's prompt-cache markers
   * (`cache_control`) and Claude's signed reasoning as `reasoning_details`. The Anthropic surface
   * gives such adapters its translation with them; every other adapter gets it without.
   */
  readonly openRouterExtras?: boolean;
  /**
   * `POST /v1/embeddings`. The answer is OpenAI's shape; `embedding` may come as floats or base64,
   * the gateway encodes it as the client asked. Adapters without it cannot serve embedding models.
   */
  embed?(req: EmbeddingsRequest, route: RouteDef, ctx: CallContext): Promise<EmbeddingsResponse>;
  /** Whether this route's backend has embeddings at all (default: yes when `embed` exists); checked at load time. */
  canEmbed?(route: RouteDef): boolean;
  /**
   * Legacy text completions (`POST /v1/completions`) on a backend's native endpoint, answered in
   * the canonical chat shape (`message.content` is the text, `logprobs` as the upstream sent
   * them). Adapters without it serve text completions through `complete`, the prompt as a user
   * message. `req.model` is the client's; the upstream model is the route's.
   */
  completeText?(req: CompletionRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse>;
  /** Streaming `completeText`: canonical chat chunks whose `delta.content` is the text. */
  streamText?(req: CompletionRequest, route: RouteDef, ctx: CallContext): AsyncIterable<ChatChunk>;
  /**
   * The most this adapter's upstream may write for a request that allows `allowed` completion
   * tokens, when it can be more (Claude: a thinking budget asked for in OpenAI's terms is added to
   * max_tokens). Budget reservations take it. Without it: `allowed`.
   */
  outputLimit?(req: ChatRequest, allowed: number, route: RouteDef): number;
  /**
   * Anthropic Messages passthrough (the `anthropic`, `vertex_claude` and `claude_sub` kinds): the Anthropic surface
   * relays requests to routes whose adapter has it, and translates for all others.
   */
  readonly messages?: MessagesRelay;
}

export interface LlmAdapterOptions {
  /** The `kind:` of routes this adapter serves. */
  kind: string;
  /** Other `kind:` values that mean this adapter (e.g. `vllm` for `openai_compat`). */
  aliases?: string[];
  /**
   * The route keys this adapter reads from `route.options`. When declared, any other key a route
   * of this kind carries (`wieght: 9`) is warned about at start and on reload as a likely typo;
   * undeclared, the adapter's options are not checked.
   */
  options?: readonly string[];
}

/**
 * Marks a provider class as an adapter; `AdapterRegistry` finds every one at start-up, in any
 * module. Usage: `@LlmAdapter({ kind: 'gemini' })`.
 */
export const LlmAdapter = DiscoveryService.createDecorator<LlmAdapterOptions>();
