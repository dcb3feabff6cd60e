import { InvalidRequestError } from '../../common/errors';
import type { ModelDef } from '../../config/registry.types';

/** A model as Anthropic's `GET /v1/models` lists it. */
export function anthropicModel(m: ModelDef) {
  return { type: 'model', id: m.id, display_name: m.name, created_at: new Date(m.created * 1000).toISOString() };
}

/** The query as Express parses it: a repeated or bracketed parameter is an array or an object. */
export interface PageQuery {
  limit?: unknown;
  afterId?: unknown;
  beforeId?: unknown;
}

function single(name: string, v: unknown): string | undefined {
  if (v === undefined || typeof v === 'string') return v;
  throw new InvalidRequestError(`${name}: Input should be a single string`, name);
}

/**
 * One page of the chat models (`limit` 1–1000, default 20; `after_id` / `before_id` cursors), in
 * the registry's order, with `has_more`, `first_id` and `last_id` as Anthropic answers them.
 */
export function anthropicModelPage(models: readonly ModelDef[], query: PageQuery) {
  const q = {
    limit: single('limit', query.limit),
    afterId: single('after_id', query.afterId),
    beforeId: single('before_id', query.beforeId),
  };
  const limit = q.limit === undefined || q.limit === '' ? 20 : Number(q.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
    throw new InvalidRequestError('limit: Input should be an integer from 1 to 1000', 'limit');
  const chat = models.filter((m) => m.type === 'chat');
  let start = 0;
  let end = chat.length;
  if (q.afterId) {
    const i = chat.findIndex((m) => m.id === q.afterId);
    if (i < 0) throw new InvalidRequestError(`after_id: no model "${q.afterId}"`, 'after_id');
    start = i + 1;
  }
  if (q.beforeId) {
    const i = chat.findIndex((m) => m.id === q.beforeId);
    if (i < 0) throw new InvalidRequestError(`before_id: no model "${q.beforeId}"`, 'before_id');
    end = i;
  }
  // Paging backwards (before_id alone) takes the page just before the cursor.
  const fromEnd = Boolean(q.beforeId) && !q.afterId;
  const slice = fromEnd ? chat.slice(Math.max(start, end - limit), end) : chat.slice(start, Math.min(end, start + limit));
  const hasMore = fromEnd ? end - limit > start : start + limit < end;
  const data = slice.map(anthropicModel);
  return { data, has_more: hasMore, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
}
