import type { ChatRequest, Usage } from '../common/chat.types';
import type { RegistrySnapshot } from '../config/model-registry.service';
import type { ModelDef, RouteDef } from '../config/registry.types';
import type { RoutingOptions } from './routing-options';

export interface AttemptRecord {
  route: string;
  provider: string;
  /** Set when a fallback model (from the request's `models`) was tried. */
  model?: string;
  /** The subscription account the attempt spent (subscription routes): the one that answered, or the last tried. */
  account?: string;
  /** Every account the attempt tried, in order, when it tried more than one. */
  accounts_tried?: string[];
  /**
   * `cancelled`: the client left while this route was answering; `skipped`: the route was not
   * called (its circuit refused, or its context window is too small after a context-length error).
   */
  outcome: 'ok' | 'error' | 'cancelled' | 'skipped';
  status?: number;
  error?: string;
  /** For a retry on the same route: which one (1 = the first retry) and the wait before it. */
  retry?: number;
  backoff_ms?: number;
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
  /**
   * The model answering: the one requested, until a fallback model from the request's `models`
   * takes over. Responses and chunks name this one.
   */
  model: ModelDef;
  /** The model the request resolved to. */
  readonly requested: ModelDef;
  /** The request's OpenRouter routing options, once validated (by the first plan). */
  options?: RoutingOptions;
  /**
   * The route whose upstream accepted the call and is working on it (until the attempt fails, or
   * its first content commits the request to it), with the usage its opening reported (Anthropic's
   * message_start). Streams: from the upstream's 2xx headers; one-shot calls, whose headers come
   * with the whole answer: from the request's dispatch. A client that leaves meanwhile is billed
   * for the prompt there.
   */
  accepted?: { route: RouteDef; model: ModelDef; usage?: Usage };
  /** Streams: a route's upstream accepted the call (the answer may still be a while). */
  onAccepted?: () => void;
  /** An attempt failed before the answer began: whatever waits on the accepted call stops. */
  onAttemptFailed?: () => void;
  /** The completion limit was lowered once to what a route's context window leaves (see RouteExecutor). */
  completionFitted?: boolean;
  /**
   * Routes the plan left out for now (unhealthy, circuit open), with why: should every route
   * tried refuse the request as one it cannot express, one of these may have taken it.
   */
  unavailable?: string[];

  constructor(
    model: ModelDef,
    readonly request: ChatRequest,
    readonly requestId: string,
    /** Aborts when the client goes away. */
    readonly signal: AbortSignal,
    readonly snapshot: RegistrySnapshot,
  ) {
    this.model = model;
    this.requested = model;
  }
}
