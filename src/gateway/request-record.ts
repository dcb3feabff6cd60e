import type { ChatRequest, Usage } from '../common/chat.types';
import { costPico, picoToUsd, usdToPico, type TokenCounts } from '../common/money';
import { estimatePromptTokens, unitsToTokens } from '../common/tokens';
import { isSoundUsage, tokenCounts, upstreamChargeUsd } from '../common/usage';
import type { ModelDef, RouteDef } from '../config/registry.types';
import type { RequestObservation } from '../observability/metrics.service';
import type { Execution } from '../routing/route-executor.service';
import type { ApiLog } from '../storage/entities/api-log.entity';
import { countImages } from '../common/tokens';
import type { UsageLease } from './usage-limiter.service';

/** An upstream's own figure for one request above this is garbage, and is not recorded. */
const MAX_UPSTREAM_COST_USD = 1_000_000;

/** The id clients see (and later look a generation up by). */
export function generationId(requestId: string): string {
  return `gen-${requestId}`;
}

/**
 * Everything learned while serving one request, turned at the end into its single `api_logs`
 * row and its metrics. Tokens come from the upstream's usage; where there is none (a server
 * that reports none, a stream cut short, a client that left) they are estimated from what was
 * asked and what was delivered, and the row says so.
 */
export class RequestRecord {
  readonly createdAt = new Date();
  model = '';
  modelDef?: ModelDef;
  stream = false;
  request?: ChatRequest;
  userId: string | null = null;
  keyId: string | null = null;
  status = 200;
  error: string | null = null;
  errorCode: string | null = null;
  finishReason: string | null = null;
  /**
   * Asked under OpenRouter's base path (`/api/v1/...`), where a stream always ends with its usage:
   * OpenRouter's `usage: {include: true}` and `stream_options.include_usage` no longer change
   * anything there, and its clients (the AI SDK's OpenRouter provider) send neither.
   */
  openRouterBase = false;
  /** Streams: the choices sent to the client, and those of them that finished. */
  private choices?: { sent: Set<number>; ended: Set<number> };
  /** Streams: until the first content reached the client; one-shot answers: until the whole answer came. */
  ttftMs?: number;
  usage?: Usage;
  /** Characters of answer sent to the client (for estimates). */
  deliveredUnits = 0;
  /** A legacy completion whose echoed prompt the estimate cannot take off (token-id prompts): what was delivered is not all output. */
  echoed = false;
  execution?: Execution;
  responseContent?: unknown;
  clientRequestId?: string;
  upstreamId?: string;
  /** The key's limits' hold on this request, settled with the final row. */
  lease?: UsageLease;
  /** The client's body, for requests that are not chat (embeddings, text completions). */
  body?: unknown;
  /** The prompt's tokens as estimated, for a request without a chat `request` to estimate them from (embeddings). */
  promptEstimate?: number;
  /** `usage` was estimated by the gateway (the upstream reported none). */
  usageEstimated = false;
  /**
   * Set when `usage` came on a content chunk — the upstream's figure so far, not its last word —
   * to the characters delivered up to and including that chunk.
   */
  usageSoFarAt?: number;
  /** Not billed (Anthropic's count_tokens): the row says what was done, at no cost. */
  free = false;
  /** What the row's metadata says besides the attempts (count_tokens: the operation and its count). */
  readonly notes: Record<string, unknown> = {};

  constructor(
    readonly id: string,
    readonly startedAt: number,
  ) {}

  fail(status: number, message: string, code: string | number | null): void {
    this.status = status;
    this.error = message.slice(0, 4000);
    this.errorCode = code === null ? null : String(code).slice(0, 100);
  }

  /**
   * The route billed: the one that answered; or, for a client that left before the first content,
   * the one whose upstream had accepted the call and was working on its prompt.
   */
  private billedRoute(): { route: RouteDef; model: ModelDef; usage?: Usage } | undefined {
    const ex = this.execution;
    if (ex?.route) return { route: ex.route, model: ex.model };
    return this.status === 499 ? ex?.accepted : undefined;
  }

  /** Tokens to bill and whether they were estimated. */
  tokens(): { counts: TokenCounts; estimated: boolean } {
    const pending = this.execution?.route ? undefined : this.billedRoute();
    if (pending) {
      // Left before the first content: the upstream's prompt, as its opening counted it or as
      // estimated; no answer reached the client.
      const u = pending.usage;
      const counts = u && isSoundUsage(u) ? tokenCounts(u) : undefined;
      const prompt = counts ?? {
        prompt: this.request ? estimatePromptTokens(this.request) : (this.promptEstimate ?? 0),
        cachedRead: 0,
        cacheWrite: 0,
      };
      return { counts: { ...prompt, completion: 0, reasoning: 0 }, estimated: true };
    }
    // Every adapter checks its upstream's usage; one that let garbage through is still not billed on it.
    if (this.usage && isSoundUsage(this.usage)) {
      const counts = tokenCounts(this.usage);
      // A running figure that was not the last word (the stream was cut, or content followed it):
      // its prompt is exact, and the answer is that figure plus an estimate of what followed.
      const soFar = this.usageSoFarAt;
      if (soFar !== undefined && (this.status !== 200 || this.deliveredUnits > soFar)) {
        // A figure that counts no output although output had come (Gemini's interim usage may
        // carry the prompt only) says nothing of it: all that was delivered is estimated.
        counts.completion =
          counts.completion === 0 && soFar > 0
            ? unitsToTokens(this.deliveredUnits)
            : counts.completion + unitsToTokens(Math.max(0, this.deliveredUnits - soFar));
        return { counts, estimated: true };
      }
      // A figure that counts no output although output reached the client (a backend that left
      // the count out of its last usage) says nothing of it: what was delivered is estimated.
      if (counts.completion === 0 && this.deliveredUnits > 0 && !this.echoed) {
        counts.completion = unitsToTokens(this.deliveredUnits);
        return { counts, estimated: true };
      }
      return { counts, estimated: this.usageEstimated };
    }
    const served = this.execution?.route !== undefined;
    if (!served && this.deliveredUnits === 0)
      return { counts: { prompt: 0, completion: 0, cachedRead: 0, cacheWrite: 0, reasoning: 0 }, estimated: false };
    const prompt = this.request ? estimatePromptTokens(this.request) : 0;
    return {
      counts: { prompt, completion: unitsToTokens(this.deliveredUnits), cachedRead: 0, cacheWrite: 0, reasoning: 0 },
      estimated: true,
    };
  }

  /**
   * The usage to show the client: the upstream's, with its output count replaced by the one
   * billed where that had to be estimated (a running figure the answer went past, or none),
   * so that the tokens a client sees and the cost beside them agree.
   */
  presentedUsage(): Usage | undefined {
    const u = this.usage;
    if (!u || !isSoundUsage(u)) return u;
    const { counts, estimated } = this.tokens();
    if (!estimated || counts.completion === u.completion_tokens) return u;
    return { ...u, completion_tokens: counts.completion, total_tokens: u.prompt_tokens + counts.completion };
  }

  /** A one-shot answer arrived from the upstream: for its client, that is the first token. */
  answered(): void {
    this.ttftMs ??= performance.now() - this.startedAt;
  }

  /** What the request costs its client, in pico-dollars, for `counts` (by default its tokens now). */
  costPico(counts: TokenCounts = this.tokens().counts): bigint {
    const billed = this.billedRoute();
    const route = billed?.route;
    // A fallback model from the request's `models` bills at its own price.
    const pricing = route?.pricing ?? (billed?.model ?? this.execution?.model ?? this.modelDef)?.pricing;
    const billable = route !== undefined && !this.free;
    return pricing && billable ? costPico(counts, pricing, 1, this.request ? countImages(this.request) : 0) : 0n;
  }

  /** A streamed choice went to the client (`finished`: with its finish reason). */
  sentChoice(index: number | undefined, finished: boolean): void {
    this.choices ??= { sent: new Set(), ended: new Set() };
    this.choices.sent.add(index ?? 0);
    if (finished) this.choices.ended.add(index ?? 0);
  }

  /**
   * The choices a stream that failed leaves unfinished, which the error that ends it closes:
   * those sent and not finished; choice 0 when none was sent, or when all had finished and the
   * upstream failed after all (a chunk without choices would break clients that read choices[0]).
   */
  openChoices(): number[] {
    if (!this.choices) return [0];
    const open = [...this.choices.sent].filter((i) => !this.choices!.ended.has(i));
    return open.length > 0 ? open : [0];
  }

  /** What the client is billed, in USD, as OpenRouter's `usage.cost` gives it (the row's cost_usd). */
  costUsd(): number {
    return Number(picoToUsd(this.costPico()));
  }

  toRow(storeContent: boolean): ApiLog {
    const latency = Math.round(performance.now() - this.startedAt);
    const { counts, estimated } = this.tokens();
    const route = this.billedRoute()?.route;
    const cost = this.costPico(counts);
    const reported = upstreamChargeUsd(this.usage);
    const upstreamCost = reported !== undefined && reported <= MAX_UPSTREAM_COST_USD ? picoToUsd(usdToPico(reported)) : null;
    const metadata: Record<string, unknown> = { ...this.notes };
    if (this.execution && this.execution.attempts.length > 0) metadata.attempts = this.execution.attempts;
    if (route) metadata.provider_model_id = route.providerModelId;
    // The subscription account that served: usage by account, from the log (the attempts name
    // the ones that failed).
    const account = this.execution?.attempts.findLast((a) => a.outcome !== 'error' && a.account !== undefined)?.account;
    if (account !== undefined) metadata.account = account;
    if (this.execution && this.execution.model !== this.execution.requested) metadata.served_model = this.execution.model.id;
    if (this.upstreamId) metadata.upstream_id = this.upstreamId;
    if (this.clientRequestId) metadata.client_request_id = this.clientRequestId;
    // A request no route answered names the last one that was tried (the one whose failure the
    // client got), so failures show up by provider in the log and the metrics.
    const tried = route ? undefined : this.execution?.attempts.findLast((a) => a.outcome !== 'skipped');
    return {
      id: this.id,
      created_at: this.createdAt,
      model: this.model.slice(0, 200),
      provider: route?.kind ?? tried?.provider ?? null,
      endpoint: route?.id ?? tried?.route ?? null,
      stream: this.stream,
      status_code: this.status,
      error: this.error,
      error_code: this.errorCode,
      finish_reason: this.finishReason,
      ttft_ms: this.ttftMs === undefined ? null : Math.round(this.ttftMs),
      latency_ms: latency,
      prompt_tokens: counts.prompt,
      completion_tokens: counts.completion,
      total_tokens: counts.prompt + counts.completion,
      cached_tokens: counts.cachedRead,
      cache_write_tokens: counts.cacheWrite,
      reasoning_tokens: counts.reasoning,
      usage_estimated: estimated,
      cost_usd: picoToUsd(cost),
      upstream_cost_usd: upstreamCost,
      api_key_id: this.keyId,
      user_id: this.userId?.slice(0, 256) ?? null,
      metadata: Object.keys(metadata).length > 0 ? metadata : null,
      request_content: storeContent ? (this.body ?? this.request ?? null) : null,
      response_content: storeContent ? (this.responseContent ?? null) : null,
    };
  }

  /**
   * The row as metrics see it. `configured` is the configured model the body named, for a request
   * refused before the model was resolved (a 400 on a known model is that model's); a name no
   * model has is `unknown`, so clients cannot mint label values.
   */
  observation(row: ApiLog, configured?: ModelDef): RequestObservation {
    return {
      model: (this.modelDef ?? configured)?.id ?? 'unknown',
      provider: row.provider ?? 'none',
      status: row.status_code,
      latencyMs: row.latency_ms,
      // The histogram is about streams: a one-shot answer's first token is its whole latency.
      ttftMs: row.stream ? (row.ttft_ms ?? undefined) : undefined,
      promptTokens: row.prompt_tokens,
      completionTokens: row.completion_tokens,
      cachedTokens: row.cached_tokens,
      cacheWriteTokens: row.cache_write_tokens,
      reasoningTokens: row.reasoning_tokens,
    };
  }
}
