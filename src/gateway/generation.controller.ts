import { setTimeout as sleep } from 'node:timers/promises';
import { Controller, Get, Query, Req, UseGuards, UseInterceptors } from '@nestjs/common';
import type { Request } from 'express';
import { InvalidRequestError } from '../common/errors';
import { contextOf } from '../common/request-context';
import { NotFoundError } from '../common/resource.errors';
import { AppConfig } from '../config/app-config';
import { ModelRegistry } from '../config/model-registry.service';
import type { ApiLog } from '../storage/entities/api-log.entity';
import { StatsRepository } from '../storage/stats.repository';
import { ApiKeyGuard } from './api-key.guard';
import { toDate } from '../storage/api-log-rollup';
import { DatabaseOutageInterceptor } from '../storage/database-outage';

/**
 * GET /v1/generation?id=gen-...: one of the caller's own requests in OpenRouter's
 * generation-stats shape. A key sees the requests made with it; an anonymous caller, anonymous
 * requests. Anything else is a 404, so ids of other keys' requests cannot be probed.
 */
@Controller('v1/generation')
@UseGuards(ApiKeyGuard)
@UseInterceptors(DatabaseOutageInterceptor)
export class GenerationController {
  constructor(
    private readonly logs: StatsRepository,
    private readonly config: AppConfig,
    private readonly registry: ModelRegistry,
  ) {}

  @Get()
  async get(@Query('id') id: unknown, @Req() req: Request) {
    if (id !== undefined && typeof id !== 'string')
      throw new InvalidRequestError(
        'The query parameter id must be given once, as one id: GET /v1/generation?id=gen-...',
        'id',
        'invalid_value',
      );
    if (typeof id !== 'string' || id.trim() === '')
      throw new InvalidRequestError(
        'The query parameter id is required: GET /v1/generation?id=gen-...',
        'id',
        'missing_required_parameter',
      );
    const requestId = id.startsWith('gen-') ? id.slice(4) : id;
    const caller = contextOf(req)?.principal?.id ?? null;
    // No id of ours is that long or holds U+0000 (which PostgreSQL would refuse to compare).
    const plausible = requestId.length <= 64 && !requestId.includes('\u0000');
    let row = plausible ? await this.logs.findLog(requestId) : undefined;
    // Served by another process (a worker, a replica) that has not written its row yet: rows go
    // in every REQUEST_LOG_FLUSH_MS, so one wait that long finds it. Only for an id of ours from
    // a request that may have ended just now; any other miss answers at once.
    if (!row && plausible && this.mayBeUnwritten(requestId)) {
      await sleep(this.config.env.REQUEST_LOG_FLUSH_MS + 250);
      row = await this.logs.findLog(requestId);
    }
    if (!row || (row.api_key_id ?? null) !== caller)
      throw new NotFoundError(
        `No generation with id "${id}" for this caller (a request's generation appears here as soon as it is over)`,
        'generation_not_found',
        'id',
      );
    // OpenRouter's api_type: "embeddings" for an embedding model's request (as the registry has it now).
    const embedding = this.registry.current().find(row.model)?.type === 'embedding';
    return { data: presentGeneration(row, embedding ? 'embeddings' : 'completions') };
  }

  /** Whether `id` is a request id (UUID v7) from a request that may still be running or just over. */
  private mayBeUnwritten(id: string): boolean {
    const m = /^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.exec(id);
    if (!m) return false;
    const started = parseInt(m[1] + m[2], 16);
    const longest = (this.registry.current().routing.totalTimeoutMs ?? this.config.upstreamTimeouts.totalMs) + 60_000;
    const now = Date.now();
    return started <= now + 1000 && now - started <= longest;
  }
}

export function presentGeneration(row: ApiLog, apiType: 'completions' | 'embeddings' = 'completions') {
  const meta = (row.metadata ?? {}) as { upstream_id?: unknown; served_model?: unknown };
  const cost = Number(row.cost_usd ?? 0);
  return {
    id: `gen-${row.id}`,
    upstream_id: typeof meta.upstream_id === 'string' ? meta.upstream_id : null,
    total_cost: cost,
    cache_discount: null,
    // What the operator paid upstream is theirs to know (admin request log), not the caller's.
    upstream_inference_cost: null,
    created_at: toDate(row.created_at).toISOString(),
    // The model that answered, as the answer named it (a fallback from the request's `models`).
    model: typeof meta.served_model === 'string' ? meta.served_model : row.model,
    app_id: null,
    streamed: Boolean(row.stream),
    cancelled: row.status_code === 499,
    provider_name: row.provider,
    // OpenRouter: latency to the first token, then the time spent generating.
    latency: row.ttft_ms ?? row.latency_ms,
    moderation_latency: null,
    generation_time: row.ttft_ms === null ? row.latency_ms : Math.max(0, row.latency_ms - row.ttft_ms),
    finish_reason: row.finish_reason,
    native_finish_reason: row.finish_reason,
    tokens_prompt: row.prompt_tokens,
    tokens_completion: row.completion_tokens,
    native_tokens_prompt: row.prompt_tokens,
    native_tokens_completion: row.completion_tokens,
    native_tokens_completion_images: null,
    native_tokens_reasoning: row.reasoning_tokens,
    native_tokens_cached: row.cached_tokens,
    num_media_prompt: null,
    num_input_audio_prompt: null,
    num_media_completion: null,
    num_search_results: null,
    origin: '',
    usage: cost,
    is_byok: false,
    external_user: row.user_id,
    api_type: apiType,
    router: null,
  };
}
