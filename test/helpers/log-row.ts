import type { ApiLog } from '../../src/storage/entities/api-log.entity';

/** A request-log row as the writer queues it (a 200 from the mock, 1 + 2 tokens); `extra` overrides fields. */
export function logRow(id: string, extra: Partial<ApiLog> = {}): ApiLog {
  return {
    id,
    created_at: new Date(),
    model: 'demo/mock',
    provider: 'mock',
    endpoint: 'mock',
    stream: false,
    status_code: 200,
    error: null,
    error_code: null,
    finish_reason: 'stop',
    ttft_ms: null,
    latency_ms: 5,
    prompt_tokens: 1,
    completion_tokens: 2,
    total_tokens: 3,
    cached_tokens: 0,
    cache_write_tokens: 0,
    reasoning_tokens: 0,
    usage_estimated: false,
    cost_usd: '0.000003',
    upstream_cost_usd: null,
    api_key_id: null,
    user_id: null,
    metadata: null,
    request_content: null,
    response_content: null,
    ...extra,
  };
}
