import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable, Logger } from '@nestjs/common';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { CallContext, LlmAdapter } from '../adapters/llm-adapter';
import type { ChatChunk, ChatResponse, Usage } from '../common/chat.types';
import { chunkHasContent } from '../common/chunks';
import { contextWindowOf, UpstreamError } from '../common/errors';
import { AppConfig, type UpstreamTimeouts } from '../config/app-config';
import type { RegistrySnapshot } from '../config/model-registry.service';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { raceAbort } from '../common/abort';
import { AttemptScope } from './attempt-scope';
import type { CircuitPermit } from './circuit-breaker';
import { Execution, type AttemptRecord } from './execution';
import { classifyFailure, decideRetry, MIN_RETRY_MS } from './retry-policy';
import { NoAvailableRouteError } from './routing-errors';
import { contextLengthOf, retryPolicyFor } from './route-settings';
import { RouteStateService } from './route-state.service';
import { RoutingManager, type Candidate } from './routing-manager.service';

export { Execution, type AttemptRecord } from './execution';

/** Starts a stream on one route. */
export type StreamOpener<T = ChatChunk> = (adapter: LlmAdapter, route: RouteDef, ctx: CallContext) => AsyncIterable<T>;

/**
 * What the executor needs to know about the items of a stream that are not chat chunks (the
 * Anthropic surface relays Messages events): which item commits the request to its route, and
 * the completion tokens an item reports, if any (for latency statistics).
 */
export interface StreamShape<T> {
  hasContent(item: T): boolean;
  completionTokens(item: T): number | undefined;
  /** Usage an item before the first content reports (what a client that leaves then is billed on). */
  usage(item: T): Usage | undefined;
}

const CHAT_SHAPE: StreamShape<ChatChunk> = {
  hasContent: chunkHasContent,
  completionTokens: (chunk) => chunk.usage?.completion_tokens,
  usage: (chunk) => chunk.usage ?? undefined,
};

/** How long a one-shot call waits for its response headers: the whole answer's time, or first_byte_ms. */
export type OneShotWait = 'answer' | 'headers';

/** An attempt that succeeded (one-shot) or committed (stream): the caller finishes it. */
interface Won<T> {
  cand: Candidate;
  ctx: CallContext;
  value: T;
  scope: AttemptScope;
  permit: CircuitPermit;
  started: number;
  retry: number;
  backoffMs?: number;
}

interface OpenStream<T> {
  it: AsyncIterator<T>;
  held: T[];
}

/** Events without content held before a stream's first content at most; later ones are dropped (see openStream). */
const MAX_HELD_EVENTS = 1000;

/**
 * The execution layer: tries the routes the manager planned, in order. A retryable failure
 * (connection refused or reset, 5xx, 408, 429) is retried on the same route after an exponential,
 * jittered backoff that honours Retry-After; a route that keeps failing, times out or cannot
 * serve the request is left for the next; a context-length error goes on to routes and fallback
 * models with a larger context; a request error or content-filter refusal is returned as is.
 * Attempts are bounded in number and by the whole-request deadline, and there is never another
 * attempt once a stream has delivered content to the client.
 */
@Injectable()
export class RouteExecutor {
  private readonly logger = new Logger('RouteExecutor');

  constructor(
    private readonly adapters: AdapterRegistry,
    private readonly manager: RoutingManager,
    private readonly config: AppConfig,
    private readonly state: RouteStateService,
  ) {}

  timeoutsFor(route: RouteDef, snapshot: RegistrySnapshot): UpstreamTimeouts {
    const total = snapshot.routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs;
    return { ...this.config.upstreamTimeouts, totalMs: total, ...route.timeouts };
  }

  /**
   * The models that may answer the request: the one it asked for, then the fallbacks of its
   * `models` (validated here: a 400 when malformed). Its limits reserve for the dearest.
   */
  models(ex: Execution): readonly ModelDef[] {
    return this.manager.models(ex);
  }

  /** The routes the request's provider preferences allow (a `no_matching_route` error when none). */
  matching(ex: Execution): RouteDef[] {
    return this.manager.matching(ex);
  }

  async complete(ex: Execution): Promise<ChatResponse> {
    return this.run(ex, (adapter, route, ctx) => adapter.complete(ex.request, route, ctx));
  }

  /**
   * Any one-shot operation (chat, embeddings, text completions) across the planned routes.
   * `wait`: `answer` for a generation, whose headers come with the whole answer and so may take
   * until the attempt's total deadline; `headers` for a quick call (embeddings, token counts),
   * whose headers are due within first_byte_ms.
   */
  async run<T>(
    ex: Execution,
    op: (adapter: LlmAdapter, route: RouteDef, ctx: CallContext) => Promise<T>,
    wait: OneShotWait = 'answer',
  ): Promise<T> {
    // Adapters stop at ctx.signal (their contract), so no extra race is needed here.
    const won = await this.attempt(ex, (cand, adapter, ctx) => op(adapter, cand.route, ctx), wait);
    won.scope.dispose();
    const duration = performance.now() - won.started;
    const usage = (won.value as Partial<ChatResponse> | undefined)?.usage;
    this.state.succeeded(won.cand.state, won.permit, {
      ttftMs: duration,
      durationMs: duration,
      completionTokens: usage?.completion_tokens,
    });
    this.settle(ex, won);
    ex.attempts.push(record(ex, won.cand, won.started, undefined, won.retry, won.backoffMs, won.ctx));
    return won.value;
  }

  /**
   * Chunks of the answer. Until the first chunk with content arrives, a failing route is retried
   * or left for the next; chunks before that (the opening role) are held back so the client sees
   * one route's answer only. After that, a failure ends the stream with the error. `open` starts the
   * stream on one route (default: the adapter's chat stream; text completions pass their own).
   */
  stream(ex: Execution, open: StreamOpener = (adapter, route, ctx) => adapter.stream(ex.request, route, ctx)): AsyncGenerator<ChatChunk> {
    return this.streamItems(ex, open, CHAT_SHAPE);
  }

  /** `stream` for items of any kind: the same attempts, commit rule and statistics. */
  async *streamItems<T>(ex: Execution, open: StreamOpener<T>, shape: StreamShape<T>): AsyncGenerator<T> {
    const won = await this.attempt(ex, (cand, adapter, ctx, scope) => this.openStream(ex, cand, adapter, ctx, scope, open, shape));
    const { cand, scope, started } = won;
    const { it, held } = won.value;
    const ttft = performance.now() - started;
    this.settle(ex, won);
    this.state.answered(cand.state, won.permit);
    scope.disarmFirstToken();
    let failed: UpstreamError | undefined;
    let completed = false;
    let tokens: number | undefined;
    let pieces = 0;
    try {
      scope.armIdle(this.timeoutsFor(cand.route, ex.snapshot).idleMs);
      for (const chunk of held) yield chunk;
      for (;;) {
        // Adapters stop at ctx.signal (their contract), so no per-chunk race is needed here.
        const n = await it.next();
        if (n.done) break;
        scope.pause();
        const chunk = n.value;
        const reported = shape.completionTokens(chunk);
        if (reported !== undefined) tokens = reported;
        else pieces++;
        yield chunk;
        scope.touch();
      }
      completed = true;
    } catch (e) {
      failed = this.failure(e, scope, cand.route, ex.requestId);
      throw failed;
    } finally {
      const duration = performance.now() - started;
      // The circuit permit was given back at commit (answered); what follows is statistics, and
      // a failure mid-answer, which still counts against the endpoint.
      if (completed)
        this.state.succeeded(cand.state, undefined, { ttftMs: ttft, durationMs: duration, completionTokens: tokens ?? pieces });
      else if (failed) this.state.failed(cand.state, undefined, failed);
      const r = record(ex, cand, started, failed, won.retry, won.backoffMs, won.ctx);
      ex.attempts.push(completed || failed ? r : { ...r, outcome: 'cancelled' });
      scope.dispose();
      await it.return?.(undefined)?.catch(() => undefined);
    }
  }

  /**
   * Runs `op` on the planned candidates until one succeeds, retrying and moving on as the
   * failures allow. The winning attempt's scope stays open for the caller to finish.
   */
  private async attempt<T>(
    ex: Execution,
    op: (cand: Candidate, adapter: LlmAdapter, ctx: CallContext, scope: AttemptScope) => Promise<T>,
    oneShot?: OneShotWait,
  ): Promise<Won<T>> {
    const plan = this.manager.plan(ex);
    const routing = ex.snapshot.routing;
    const deadline = performance.now() + (routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs);
    const random = this.manager.rng;
    let calls = 0;
    let last: UpstreamError | undefined;
    /** The last failure of a route that could take the request: what the client is told before "this route cannot". */
    let lastServable: UpstreamError | undefined;
    /** After a context-length error: only windows larger than this can help. */
    let needContext: number | undefined;
    /** After a content-filter refusal: that model is done with; a fallback model may still answer. */
    let filtered: string | undefined;
    for (const [index, cand] of plan.entries()) {
      if (filtered !== undefined && cand.model.id === filtered) {
        ex.attempts.push(skipped(ex, cand, 'the model was refused by a content filter'));
        continue;
      }
      if (needContext !== undefined && contextLengthOf(cand.model, cand.route) <= needContext) {
        ex.attempts.push(
          skipped(ex, cand, `context window of ${contextLengthOf(cand.model, cand.route)} tokens is not larger than the one exceeded`),
        );
        continue;
      }
      const policy = retryPolicyFor(cand.route, routing);
      let backoffMs: number | undefined;
      for (let retry = 0; ; retry++) {
        // A try after the first needs time to be worth making: one begun with a millisecond left
        // only called the upstream to drop it, and answered "no answer within 1 ms".
        if (calls >= routing.retry.maxAttempts || performance.now() >= deadline - (calls > 0 ? MIN_RETRY_MS : 0))
          throw lastServable ?? last ?? this.deadlineError(ex);
        const permit = this.state.acquire(cand.state);
        if (!permit) {
          (ex.unavailable ??= []).push(`${cand.route.id}: circuit open`);
          ex.attempts.push(skipped(ex, cand, 'circuit open'));
          break;
        }
        calls++;
        const { adapter, scope, ctx } = this.begin(ex, cand, deadline, oneShot);
        const started = performance.now();
        try {
          const value = await op(cand, adapter, ctx, scope);
          return { cand, ctx, value, scope, permit, started, retry, backoffMs };
        } catch (e) {
          const err = this.failure(e, scope, cand.route, ex.requestId);
          scope.dispose();
          if (err.unsupportedByRoute && !ex.signal.aborted) {
            // Refused by the gateway before any call (the route cannot express the request): no
            // attempt spent, nothing counted against the route, and the next route is tried.
            calls--;
            this.state.cancelled(cand.state, permit);
            ex.attempts.push(skipped(ex, cand, err.message));
            last = err;
            break;
          }
          // The upstream's work is billed only when the client left it (see Execution.accepted).
          if (!ex.signal.aborted) ex.accepted = undefined;
          ex.onAttemptFailed?.();
          this.state.failed(cand.state, permit, err);
          ex.attempts.push(record(ex, cand, started, err, retry, backoffMs, ctx));
          last = err;
          lastServable = err;
          let decision = decideRetry(err, retry, policy, deadline - performance.now(), random, untriedRoutes(plan, index));
          // A content filter stops the model, not the request: the client's fallback models
          // (OpenRouter's `models`) are tried, as OpenRouter does on a moderation flag.
          if (
            decision.kind === 'stop' &&
            classifyFailure(err) === 'content_filter' &&
            plan.slice(index + 1).some((c) => c.model.id !== cand.model.id)
          ) {
            filtered = cand.model.id;
            break;
          }
          if (decision.kind === 'stop') throw err;
          // Another try here must leave a call for every route of this model not tried yet: a
          // route that fails twice should not use up the budget a healthy next route needed.
          // (Fallback models come after; reserving for them too would end retries altogether.)
          if (decision.kind === 'retry' && calls + untriedRoutes(plan, index) >= routing.retry.maxAttempts) decision = { kind: 'next' };
          if (decision.kind === 'larger_context' && this.fitCompletion(ex, err)) decision = { kind: 'retry', delayMs: 0 };
          if (decision.kind === 'larger_context') needContext = contextLengthOf(cand.model, cand.route);
          // This failure opened the route's circuit (or opened it again, a half-open probe's):
          // the next route now, not a wait for a retry the circuit refuses, or lets through as
          // its one probe (it stays open no longer than a Retry-After, which the wait may equal).
          if (
            decision.kind === 'retry' &&
            (cand.state.breaker.state === 'open' || !this.state.admitsAt(cand.state, performance.now() + decision.delayMs))
          ) {
            (ex.unavailable ??= []).push(`${cand.route.id}: circuit open`);
            decision = { kind: 'next' };
          }
          if (decision.kind !== 'retry') break;
          backoffMs = decision.delayMs;
          await this.wait(decision.delayMs, ex.signal, cand.route);
        }
      }
    }
    // Every route tried refused the request as one it cannot express, while others that may take
    // it were left out for now: not the client's request to change, but a wait.
    if (!lastServable && last?.unsupportedByRoute && ex.unavailable?.length) {
      throw new NoAvailableRouteError(
        `No route that can take this request is available right now (${ex.unavailable.join('; ')}); the others refused it: ${last.message}`,
        ex.snapshot.routing.circuitBreaker.cooldownMs,
      );
    }
    throw lastServable ?? last ?? this.noRoute(ex);
  }

  /**
   * A prompt that fits a route's window, but not with the completion limit asked for (Claude Code
   * asks for 32,000 tokens; a self-hosted 32k model refuses any prompt over 768 with that): the
   * limit is lowered, once, to what the window leaves, as the route's own error counted it, and
   * the route is asked again. Where the error does not say both figures, the larger-context
   * fallback goes on as before.
   */
  private fitCompletion(ex: Execution, err: UpstreamError): boolean {
    if (ex.completionFitted) return false;
    const fit = contextWindowOf(err);
    const req = ex.request;
    const asked = req.max_completion_tokens ?? req.max_tokens;
    if (!fit || typeof asked !== 'number' || fit.prompt >= fit.window || asked <= fit.window - fit.prompt) return false;
    ex.completionFitted = true;
    const room = fit.window - fit.prompt;
    if (req.max_completion_tokens != null) req.max_completion_tokens = room;
    if (req.max_tokens != null) req.max_tokens = room;
    this.logger.log(
      `request ${ex.requestId}: completion limit ${asked} lowered to ${room}, what the context window of ${fit.window} leaves`,
    );
    return true;
  }

  /** Opens a stream and reads it up to its first content, which commits the request to this route. */
  private async openStream<T>(
    ex: Execution,
    cand: Candidate,
    adapter: LlmAdapter,
    ctx: CallContext,
    scope: AttemptScope,
    open: StreamOpener<T>,
    shape: StreamShape<T>,
  ): Promise<OpenStream<T>> {
    const it = open(adapter, cand.route, ctx)[Symbol.asyncIterator]();
    const held: T[] = [];
    // Until the first content only the first token's deadline runs: a server may send its
    // opening (role) chunk at once and then nothing until prefill is done, which on a long
    // prompt outlasts the idle deadline many times over.
    scope.armFirstToken(ctx.timeouts.firstTokenMs);
    try {
      for (;;) {
        const n = await raceAbort(it.next(), scope.signal);
        if (n.done)
          throw new UpstreamError({
            failure: 'protocol',
            message: `upstream ${cand.route.id} ended the stream without an answer`,
            route: cand.route.id,
            provider: cand.route.kind,
          });
        if (shape.hasContent(n.value)) {
          held.push(n.value);
          return { it, held };
        }
        // Events without content past the first so many (a server sending empty deltas as it
        // thinks, or without end) are dropped, not held in memory until the first token's
        // deadline; which still runs, and failover with it.
        if (held.length < MAX_HELD_EVENTS) held.push(n.value);
        // Only while this route's call is the accepted one (Anthropic's message_start is parsed for it).
        if (ex.accepted?.route === cand.route) ex.accepted.usage = shape.usage(n.value) ?? ex.accepted.usage;
      }
    } catch (e) {
      void it.return?.(undefined)?.catch(() => undefined);
      throw e;
    }
  }

  /** Sets who answers: the route, and the model when a fallback model took over. */
  private settle(ex: Execution, won: Won<unknown>): void {
    ex.accepted = undefined;
    ex.route = won.cand.route;
    ex.model = won.cand.model;
  }

  private begin(
    ex: Execution,
    cand: Candidate,
    deadline: number,
    oneShot: OneShotWait | undefined,
  ): { adapter: LlmAdapter; scope: AttemptScope; ctx: CallContext } {
    const route = cand.route;
    const adapter = this.adapters.get(route.kind);
    // validate() refuses such configs; reaching here means a bug, not bad input.
    if (!adapter) throw new Error(`no adapter for kind ${route.kind}`);
    let timeouts = this.timeoutsFor(route, ex.snapshot);
    const remaining = Math.max(1, Math.min(timeouts.totalMs, deadline - performance.now()));
    // A one-shot answer's headers come with the whole answer: no deadline short of the total
    // tells a slow answer from a hung server. A second past it, so that the total's own timer
    // ends the attempt (and says so): two timers for the same instant raced, and undici's coarse
    // one at times won with "sent no response".
    if (oneShot === 'answer') timeouts = { ...timeouts, firstByteMs: remaining + 1000 };
    const scope = new AttemptScope(ex.signal, route, remaining);
    return {
      adapter,
      scope,
      ctx: {
        requestId: ex.requestId,
        signal: scope.signal,
        timeouts: { ...timeouts, totalMs: remaining },
        publicModel: cand.model.id,
        served: {},
        accepted: oneShot
          ? undefined
          : () => {
              ex.accepted = { route, model: cand.model };
              ex.onAccepted?.();
            },
        dispatched: oneShot
          ? () => {
              ex.accepted = { route, model: cand.model };
            }
          : undefined,
      },
    };
  }

  /** The backoff before a retry; the client leaving ends it (and the request) at once. */
  private async wait(ms: number, signal: AbortSignal, route: RouteDef): Promise<void> {
    try {
      await sleep(ms, undefined, { signal });
    } catch {
      throw new UpstreamError({ failure: 'aborted', message: 'the client closed the request', route: route.id, provider: route.kind });
    }
  }

  /** Any failure as an UpstreamError; a deadline or the client leaving explains a cancelled call. */
  private failure(e: unknown, scope: AttemptScope, route: RouteDef, requestId: string): UpstreamError {
    const reason = scope.reason();
    if (reason && (!(e instanceof UpstreamError) || e.failure === 'aborted' || e === reason)) return reason;
    if (e instanceof UpstreamError) {
      e.route ??= route.id;
      return e;
    }
    this.logger.error(`request ${requestId}: adapter ${route.kind} threw on route ${route.id}: ${(e as Error)?.stack ?? String(e)}`);
    // A RangeError (a value too deep to serialise, a number out of range) comes from what the
    // request carried, not from the endpoint: it must not open the route's circuit for everyone.
    // Anything else (a mapper choking on the upstream's answer) counts as the endpoint's fault;
    // its text ("Cannot read properties of null") is for the log above, not for the client.
    return new UpstreamError({
      failure: 'protocol',
      message:
        e instanceof RangeError
          ? `adapter ${route.kind} failed on route ${route.id}: ${e.message}`
          : `the gateway failed on route ${route.id}; its log has the details`,
      route: route.id,
      provider: route.kind,
      gatewayFault: e instanceof RangeError,
    });
  }

  /** Every planned route was skipped (their circuits opened while this request was under way). */
  private noRoute(ex: Execution): NoAvailableRouteError {
    const cooldown = ex.snapshot.routing.circuitBreaker.cooldownMs;
    return new NoAvailableRouteError(
      `No route can serve ${ex.requested.id} right now: every route was skipped (circuit open); try again later`,
      cooldown,
    );
  }

  private deadlineError(ex: Execution): UpstreamError {
    return new UpstreamError({
      failure: 'timeout',
      code: 'total_timeout',
      message: `no answer for model ${ex.requested.id} within the request deadline`,
    });
  }
}

function skipped(ex: Execution, cand: Candidate, why: string): AttemptRecord {
  const r: AttemptRecord = { route: cand.route.id, provider: cand.route.kind, outcome: 'skipped', error: why, duration_ms: 0 };
  if (cand.model !== ex.requested) r.model = cand.model.id;
  return r;
}

function record(
  ex: Execution,
  cand: Candidate,
  started: number,
  err?: UpstreamError,
  retry = 0,
  backoffMs?: number,
  ctx?: CallContext,
): AttemptRecord {
  const r: AttemptRecord = {
    route: cand.route.id,
    provider: cand.route.kind,
    // The client leaving is no failure of the route's.
    outcome: err ? (err.failure === 'aborted' ? 'cancelled' : 'error') : 'ok',
    duration_ms: Math.round(performance.now() - started),
  };
  // The account that answered, else (a failure) the last one tried; and all of them, if several.
  const tried = ctx?.served.tried ?? [];
  const account = ctx?.served.account ?? (err ? tried.at(-1) : undefined);
  if (account !== undefined) r.account = account;
  if (tried.length > 1) r.accounts_tried = [...tried];
  if (cand.model !== ex.requested) r.model = cand.model.id;
  if (retry > 0) {
    r.retry = retry;
    if (backoffMs !== undefined) r.backoff_ms = backoffMs;
  }
  if (err) {
    r.status = err.upstreamStatus ?? err.status;
    r.error = err.message;
  }
  return r;
}

/** Candidates after `index` that serve the same model (its routes not tried yet). */
function untriedRoutes(plan: readonly Candidate[], index: number): number {
  let n = 0;
  for (let i = index + 1; i < plan.length; i++) if (plan[i].model === plan[index].model) n++;
  return n;
}
