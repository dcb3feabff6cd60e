import { Controller, Get, Query, UseGuards, UsePipes, UseInterceptors } from '@nestjs/common';
import { InvalidRequestError } from '../common/errors';
import { picoToUsd, usdToPico } from '../common/money';
import { toDate } from '../storage/api-log-rollup';
import { DatabaseOutageInterceptor } from '../storage/database-outage';
import type { ApiLog } from '../storage/entities/api-log.entity';
import { StatsRepository } from '../storage/stats.repository';
import { AdminGuard } from './admin.guard';
import { AdminValidationPipe } from './admin-validation.pipe';
import { RequestsQuery, StatsQuery } from './dto/stats.dto';
import { parseTimestamp } from './dto/validators';

const DAY_MS = 86_400_000;

/** Usage statistics and the request log, for operators. */
@Controller('admin')
@UseGuards(AdminGuard)
@UsePipes(AdminValidationPipe)
@UseInterceptors(DatabaseOutageInterceptor)
export class StatsController {
  constructor(private readonly logs: StatsRepository) {}

  /**
   * Requests, errors, tokens, cost and latency / time-to-first-token percentiles over [from, to),
   * grouped by model, provider, key or UTC day. Percentiles come from histograms (within ~3%).
   */
  @Get('stats')
  async stats(@Query() q: StatsQuery) {
    const to = q.to ? parseTimestamp(q.to)! : new Date();
    const from = q.from ? parseTimestamp(q.from)! : new Date(to.getTime() - DAY_MS);
    if (from.getTime() >= to.getTime()) throw new InvalidRequestError('Invalid query: from must be before to', 'from');
    return this.logs.stats(from, to, q.group_by);
  }

  /** The request log, newest first; `next_cursor` fetches the next page. */
  @Get('requests')
  async requests(@Query() q: RequestsQuery) {
    const from = q.from ? parseTimestamp(q.from) : undefined;
    const to = q.to ? parseTimestamp(q.to) : undefined;
    if (from && to && from.getTime() >= to.getTime()) throw new InvalidRequestError('Invalid query: from must be before to', 'from');
    const status =
      q.status === undefined ? undefined : /^\d+$/.test(q.status) ? Number(q.status) : (q.status as 'success' | 'error' | 'cancelled');
    const page = await this.logs.requests({ from, to, keyId: q.key, model: q.model, status, limit: q.limit, cursor: q.cursor });
    return { object: 'list', data: page.data.map(presentLog), has_more: page.next_cursor !== null, next_cursor: page.next_cursor };
  }
}

function usd(v: string | number | null): string | null {
  if (v === null || v === undefined) return null;
  try {
    return picoToUsd(usdToPico(v));
  } catch {
    return String(v);
  }
}

export function presentLog(r: ApiLog) {
  return {
    id: r.id,
    generation_id: `gen-${r.id}`,
    created_at: toDate(r.created_at).toISOString(),
    model: r.model,
    provider: r.provider,
    endpoint: r.endpoint,
    stream: Boolean(r.stream),
    status_code: r.status_code,
    error: r.error,
    error_code: r.error_code,
    finish_reason: r.finish_reason,
    ttft_ms: r.ttft_ms,
    latency_ms: r.latency_ms,
    prompt_tokens: r.prompt_tokens,
    completion_tokens: r.completion_tokens,
    total_tokens: r.total_tokens,
    cached_tokens: r.cached_tokens,
    cache_write_tokens: r.cache_write_tokens,
    reasoning_tokens: r.reasoning_tokens,
    usage_estimated: Boolean(r.usage_estimated),
    cost_usd: usd(r.cost_usd) ?? '0',
    upstream_cost_usd: usd(r.upstream_cost_usd),
    api_key_id: r.api_key_id,
    user_id: r.user_id,
    metadata: r.metadata,
  };
}
