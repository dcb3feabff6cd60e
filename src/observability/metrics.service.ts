import cluster from 'node:cluster';
import { Injectable } from '@nestjs/common';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { answerMetricsRequests, clusterMetrics } from '../cluster';
import { AppConfig } from '../config/app-config';

// Up to the longest request the default whole-request timeout (600 s) allows, and beyond.
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200];

export interface RequestObservation {
  model: string;
  provider: string;
  status: number;
  latencyMs: number;
  ttftMs?: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
  reasoningTokens: number;
}

/** Prometheus metrics, in a registry of the app's own (several gateways may share a process in tests). */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();
  readonly enabled: boolean;
  private readonly requests: Counter<'model' | 'provider' | 'status'>;
  private readonly latency: Histogram<'model' | 'provider' | 'status'>;
  private readonly ttft: Histogram<'model' | 'provider' | 'status'>;
  private readonly tokens: Counter<'model' | 'provider' | 'type'>;
  private readonly attempts: Counter<'model' | 'provider' | 'route' | 'outcome'>;
  private readonly refusals: Counter<'status' | 'code'>;

  constructor(config: AppConfig) {
    this.enabled = config.env.METRICS_ENABLED;
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'hybridinference_requests_total',
      help: 'Requests served, by model, provider and HTTP status',
      labelNames: ['model', 'provider', 'status'],
      registers,
    });
    this.latency = new Histogram({
      name: 'hybridinference_request_duration_seconds',
      help: 'Time from request to the last byte of the response',
      labelNames: ['model', 'provider', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.ttft = new Histogram({
      name: 'hybridinference_time_to_first_token_seconds',
      help: 'Streams: time from request to the first content sent to the client',
      labelNames: ['model', 'provider', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.tokens = new Counter({
      name: 'hybridinference_tokens_total',
      help: 'Tokens, by model, provider and type (prompt, completion, cached, cache_write, reasoning)',
      labelNames: ['model', 'provider', 'type'],
      registers,
    });
    this.attempts = new Counter({
      name: 'hybridinference_upstream_attempts_total',
      help: 'Attempts at upstream routes, by model (route ids are unique within a model only), provider, route and outcome',
      labelNames: ['model', 'provider', 'route', 'outcome'],
      registers,
    });
    this.refusals = new Counter({
      name: 'hybridinference_auth_refusals_total',
      help: 'Calls refused at the API key check (missing, not valid, revoked, expired, suspended; 503 when keys could not be read), by status and error code',
      labelNames: ['status', 'code'],
      registers,
    });
    if (this.enabled) collectDefaultMetrics({ register: this.registry, prefix: 'hybridinference_' });
    // In a multi-process gateway the primary collects this registry from every worker.
    if (cluster.isWorker) answerMetricsRequests(this.registry);
  }

  /** Prometheus text: this process's metrics, or in a multi-process gateway every worker's summed. */
  async scrape(): Promise<{ text: string; contentType: string }> {
    if (cluster.isWorker) return clusterMetrics();
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }

  observeRequest(o: RequestObservation): void {
    if (!this.enabled) return;
    const labels = { model: o.model, provider: o.provider, status: String(o.status) };
    this.requests.inc(labels);
    this.latency.observe(labels, o.latencyMs / 1000);
    if (o.ttftMs !== undefined) this.ttft.observe(labels, o.ttftMs / 1000);
    const t = { model: o.model, provider: o.provider };
    if (o.promptTokens) this.tokens.inc({ ...t, type: 'prompt' }, o.promptTokens);
    if (o.completionTokens) this.tokens.inc({ ...t, type: 'completion' }, o.completionTokens);
    if (o.cachedTokens) this.tokens.inc({ ...t, type: 'cached' }, o.cachedTokens);
    if (o.cacheWriteTokens) this.tokens.inc({ ...t, type: 'cache_write' }, o.cacheWriteTokens);
    if (o.reasoningTokens) this.tokens.inc({ ...t, type: 'reasoning' }, o.reasoningTokens);
  }

  observeAttempt(model: string, provider: string, route: string, outcome: string): void {
    if (this.enabled) this.attempts.inc({ model, provider, route, outcome });
  }

  /** A call refused at the API key check, before any request-log row is made. */
  observeRefusal(status: number, code: string): void {
    if (this.enabled) this.refusals.inc({ status: String(status), code });
  }

  /**
   * A counter whose running total (which only ever rises) is kept elsewhere and read when /metrics
   * is scraped: typed `counter`, so that `rate()` and `increase()` see a restart as a reset.
   */
  counterOf(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  /** A gauge whose value is read when /metrics is scraped. */
  gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }
}
