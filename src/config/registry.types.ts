import type { Pricing } from '../common/money';
import type { UpstreamTimeouts } from './app-config';

export type Locality = 'local' | 'remote';

/** One way to serve a model: a backend of some adapter kind. */
export interface RouteDef {
  /** Unique within its model; names the endpoint in logs, metrics and /routing. */
  readonly id: string;
  /** The adapter kind or alias as written (`vllm`, `openai_compat`, `openrouter`). */
  readonly kind: string;
  /** The bracketed part of `kind: openrouter[deepinfra]`, if any. */
  readonly kindArg?: string;
  readonly baseUrl?: string;
  readonly apiKeys: readonly string[];
  readonly providerModelId: string;
  readonly weight: number;
  readonly locality: Locality;
  readonly headers: Readonly<Record<string, string>>;
  /** Merged into every upstream request body (e.g. `chat_template_kwargs`). */
  readonly extraBody?: Readonly<Record<string, unknown>>;
  readonly timeouts: Partial<UpstreamTimeouts>;
  /** Overrides the model's pricing for requests this route serves. */
  readonly pricing?: Pricing;
  /** Every other key of the route, for its adapter (e.g. the mock's `ttft_ms`). */
  readonly options: Readonly<Record<string, unknown>>;
  /** "config/models.yaml:31" — where to point a person at when this route is wrong. */
  readonly where: string;
}

export interface Architecture {
  modality: string;
  input_modalities: string[];
  output_modalities: string[];
  tokenizer: string;
  instruct_type: string | null;
}

export interface ModelDef {
  readonly id: string;
  readonly name: string;
  /** OpenRouter's permanent slug for the model (default: its id). */
  readonly canonicalSlug: string;
  /** The model's Hugging Face repository, for open-weight models. */
  readonly huggingFaceId: string | null;
  readonly description: string;
  readonly created: number;
  readonly type: 'chat' | 'embedding';
  readonly contextLength: number;
  readonly maxCompletionTokens: number | null;
  readonly architecture: Architecture;
  readonly pricing: Pricing;
  readonly supportedParameters: readonly string[];
  readonly isModerated: boolean;
  readonly aliases: readonly string[];
  /** Strategy name from `router:`; falls back to routing.yaml's default. */
  readonly router?: string;
  /** Where `router:` is written ("config/models.yaml:37 (models[2].router)"), when it is. */
  readonly routerWhere?: string;
  readonly routerParams: Readonly<Record<string, unknown>>;
  readonly routes: readonly RouteDef[];
  readonly where: string;
}

export interface Deployment {
  readonly endpoint: string;
  readonly models: readonly string[];
}

export interface RoutingDef {
  /** Default strategy for models without `router:`. */
  readonly strategy: string;
  /** Where the default strategy is written, when it is. */
  readonly strategyWhere?: string;
  readonly localFraction: number;
  /** Total request timeout (ms) from `timeout:` (seconds); undefined = env default. */
  readonly totalTimeoutMs?: number;
  /** Seconds between active health checks; 0 = off. */
  readonly healthCheckSeconds: number;
  readonly localDeployments: readonly Deployment[];
  readonly remoteDeployments: readonly Deployment[];
  readonly file?: string;
  /** Same-route retries and the attempt budget (`retry:`). */
  readonly retry: RetryPolicy;
  /** Per-endpoint circuit breakers (`circuit_breaker:`). */
  readonly circuitBreaker: CircuitPolicy;
  /** How long one active health probe may take (`health_check_timeout_ms`). */
  readonly healthCheckTimeoutMs: number;
  /** The recent latency and error figures strategies and /admin/routing read (`stats_window:`). */
  readonly statsWindow: StatsWindowDef;
  /** With REDIS_URL: how often circuit and health state is read back from Redis (`state_sync_ms`). */
  readonly stateSyncMs: number;
}

export interface RetryPolicy {
  /** Further tries on the same route after a retryable failure (connection, reset, 5xx, 408, 429). */
  readonly maxRetries: number;
  /** The first backoff; it doubles with each retry, with jitter, up to `maxBackoffMs`. */
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  /** The longest Retry-After waited for on the same route; a longer one moves to the next route. */
  readonly maxRetryAfterMs: number;
  /** Upstream calls of one request, every route and retry included. */
  readonly maxAttempts: number;
}

export interface CircuitPolicy {
  /** Consecutive failures (5xx, 408, 429, connection, timeout) that open the circuit. */
  readonly failureThreshold: number;
  /** How long an open circuit refuses traffic before it lets probes through (half-open). */
  readonly cooldownMs: number;
  /** Requests let through at once while half-open. */
  readonly halfOpenRequests: number;
}

export interface StatsWindowDef {
  /** Samples kept per route. */
  readonly size: number;
  /** Samples older than this are forgotten, so that a recovered endpoint is measured afresh. */
  readonly seconds: number;
}
