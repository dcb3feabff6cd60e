import { Injectable } from '@nestjs/common';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { CallContext, LlmAdapter } from '../adapters/llm-adapter';
import type { ChatChunk, ChatRequest, ChatResponse } from '../common/chat.types';
import { chunkHasContent } from '../common/chunks';
import { UpstreamError } from '../common/errors';
import { AppConfig, type UpstreamTimeouts } from '../config/app-config';
import type { RegistrySnapshot } from '../config/model-registry.service';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { AttemptScope, raceAbort } from './attempt-scope';
import { RoutingManager } from './routing-manager.service';

export interface AttemptRecord {
  route: string;
  provider: string;
  /** `cancelled`: the client left while this route was answering. */
  outcome: 'ok' | 'error' | 'cancelled';
  status?: number;
  error?: string;
  duration_ms: number;
}

/**
 * One request's journey through the routes. The caller keeps it, so that even when the
 * request fails it can log every attempt and the route that was serving.
 */
export class Execution {
  readonly attempts: AttemptRecord[] = [];
  /** The route that answered (for streams: the one committed to at the first content). */
  route?: RouteDef;

  constructor(
    readonly model: ModelDef,
    readonly request: ChatRequest,
    readonly requestId: string,
    /** Aborts when the client goes away. */
    readonly signal: AbortSignal,
    readonly snapshot: RegistrySnapshot,
  ) {}
}

/**
 * The execution layer: tries the routes the strategy planned, in order, moving on only for
 * retryable failures and never once a stream has delivered content to the client.
 */
@Injectable()
export class RouteExecutor {
  constructor(
    private readonly adapters: AdapterRegistry,
    private readonly manager: RoutingManager,
    private readonly config: AppConfig,
  ) {}

  timeoutsFor(route: RouteDef, snapshot: RegistrySnapshot): UpstreamTimeouts {
    const total = snapshot.routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs;
    return { ...this.config.upstreamTimeouts, totalMs: total, ...route.timeouts };
  }

  async complete(ex: Execution): Promise<ChatResponse> {
    return this.run(ex, (adapter, route, ctx) => adapter.complete(ex.request, route, ctx));
  }

  /**
   * Any one-shot operation (chat, embeddings, text completions) across the planned routes: the
   * next route is tried for retryable failures only, within the whole-request deadline.
   */
  async run<T>(ex: Execution, op: (adapter: LlmAdapter, route: RouteDef, ctx: CallContext) => Promise<T>): Promise<T> {
    const plan = this.manager.plan(ex.model, ex.request, ex.snapshot);
    const deadline = performance.now() + (ex.snapshot.routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs);
    let last: UpstreamError | undefined;
    for (const route of plan) {
      const { adapter, scope, ctx } = this.begin(ex, route, deadline);
      const started = performance.now();
      try {
        // Adapters stop at ctx.signal (their contract), so no extra race is needed here.
        const res = await op(adapter, route, ctx);
        ex.route = route;
        ex.attempts.push(record(route, started));
        return res;
      } catch (e) {
        const err = this.failure(e, scope, route);
        ex.attempts.push(record(route, started, err));
        if (err.failure === 'aborted' || !err.retryable) throw err;
        last = err;
      } finally {
        scope.dispose();
      }
    }
    throw last ?? this.noRoute(ex);
  }

  /**
   * Chunks of the answer. Until the first chunk with content arrives, a failing route is left for
   * the next; chunks before that (the opening role) are held back so the client sees one
   * route's answer only. After that, a failure ends the stream with the error. `open` starts the
   * stream on one route (default: the adapter's chat stream; text completions pass their own).
   */
  async *stream(ex: Execution, open: (adapter: LlmAdapter, route: RouteDef, ctx: CallContext) => AsyncIterable<ChatChunk> = (adapter, route, ctx) => adapter.stream(ex.request, route, ctx)): AsyncGenerator<ChatChunk> {
    const plan = this.manager.plan(ex.model, ex.request, ex.snapshot);
    const deadline = performance.now() + (ex.snapshot.routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs);
    let last: UpstreamError | undefined;
    for (const route of plan) {
      const { adapter, scope, ctx } = this.begin(ex, route, deadline);
      const started = performance.now();
      const it = open(adapter, route, ctx)[Symbol.asyncIterator]();
      const held: ChatChunk[] = [];
      scope.armFirstToken(ctx.timeouts.firstTokenMs);
      try {
        for (;;) {
          const n = await raceAbort(it.next(), scope.signal);
          if (n.done) throw new UpstreamError({ failure: 'protocol', message: `upstream ${route.id} ended the stream without an answer`, route: route.id, provider: route.kind });
          held.push(n.value);
          if (chunkHasContent(n.value)) break;
        }
      } catch (e) {
        const err = this.failure(e, scope, route);
        ex.attempts.push(record(route, started, err));
        scope.dispose();
        void it.return?.(undefined)?.catch(() => undefined);
        if (err.failure === 'aborted' || !err.retryable) throw err;
        last = err;
        continue;
      }

      ex.route = route;
      scope.disarmFirstToken();
      let failed: UpstreamError | undefined;
      let completed = false;
      try {
        for (const chunk of held) yield chunk;
        scope.armIdle(ctx.timeouts.idleMs);
        for (;;) {
          // Adapters stop at ctx.signal (their contract), so no per-chunk race is needed here.
          const n = await it.next();
          if (n.done) break;
          scope.pause();
          yield n.value;
          scope.touch();
        }
        completed = true;
      } catch (e) {
        failed = this.failure(e, scope, route);
        throw failed;
      } finally {
        ex.attempts.push(completed || failed ? record(route, started, failed) : { ...record(route, started), outcome: 'cancelled' });
        scope.dispose();
        await it.return?.(undefined)?.catch(() => undefined);
      }
      return;
    }
    throw last ?? this.noRoute(ex);
  }

  private begin(ex: Execution, route: RouteDef, deadline: number): { adapter: LlmAdapter; scope: AttemptScope; ctx: CallContext } {
    const adapter = this.adapters.get(route.kind);
    // validate() refuses such configs; reaching here means a bug, not bad input.
    if (!adapter) throw new Error(`no adapter for kind ${route.kind}`);
    const timeouts = this.timeoutsFor(route, ex.snapshot);
    const remaining = Math.max(1, Math.min(timeouts.totalMs, deadline - performance.now()));
    const scope = new AttemptScope(ex.signal, route, remaining);
    return { adapter, scope, ctx: { requestId: ex.requestId, signal: scope.signal, timeouts: { ...timeouts, totalMs: remaining }, publicModel: ex.model.id } };
  }

  /** Any failure as an UpstreamError; a deadline or the client leaving explains a cancelled call. */
  private failure(e: unknown, scope: AttemptScope, route: RouteDef): UpstreamError {
    const reason = scope.reason();
    if (reason && (!(e instanceof UpstreamError) || e.failure === 'aborted' || e === reason)) return reason;
    if (e instanceof UpstreamError) {
      e.route ??= route.id;
      return e;
    }
    return new UpstreamError({ failure: 'protocol', message: `adapter ${route.kind} failed on route ${route.id}: ${(e as Error)?.message ?? String(e)}`, route: route.id, provider: route.kind });
  }

  private noRoute(ex: Execution): UpstreamError {
    return new UpstreamError({ failure: 'connect', message: `no route can serve model ${ex.model.id}`, retryable: false });
  }
}

function record(route: RouteDef, started: number, err?: UpstreamError): AttemptRecord {
  const r: AttemptRecord = { route: route.id, provider: route.kind, outcome: err ? 'error' : 'ok', duration_ms: Math.round(performance.now() - started) };
  if (err) {
    r.status = err.upstreamStatus ?? err.status;
    r.error = err.message;
  }
  return r;
}
