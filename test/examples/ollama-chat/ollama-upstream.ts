import type { ServerResponse } from 'node:http';
import { countWords, sendJson, sleep, StandIn, words, type SeenRequest } from '../../fixtures/standin';

/**
 * A stand-in for Ollama's native `POST /api/chat`: `stream` defaults to true (NDJSON lines of
 * `{model, created_at, message, done: false}` then one `done: true` line with `done_reason`,
 * `prompt_eval_count` and `eval_count`); `stream: false` answers one such object; errors are
 * `{"error": "..."}` (an unknown model is a 404).
 */
export class OllamaUpstream extends StandIn {
  async start(): Promise<string> {
    return this.listen();
  }

  protected async route(req: SeenRequest, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST' || req.path !== '/api/chat') return sendJson(res, 404, { error: '404 page not found' });
    const body = req.body as {
      model?: string;
      messages?: Array<{ content: string }>;
      stream?: boolean;
      options?: { num_predict?: number };
    };
    if (body.model === 'missing') return sendJson(res, 404, { error: `model "${body.model}" not found, try pulling it first` });
    const messages = body.messages ?? [];
    const all = words(`echo: ${messages.at(-1)?.content ?? ''}`);
    const max = body.options?.num_predict;
    const toks = typeof max === 'number' && max >= 0 ? all.slice(0, max) : all;
    const doneReason = toks.length < all.length ? 'length' : 'stop';
    const created_at = new Date().toISOString();
    const final = {
      model: body.model,
      created_at,
      done: true,
      done_reason: doneReason,
      total_duration: 1,
      load_duration: 1,
      prompt_eval_count: messages.reduce((s, m) => s + countWords(m.content), 0),
      prompt_eval_duration: 1,
      eval_count: toks.length,
      eval_duration: 1,
    };
    if (body.stream === false) return sendJson(res, 200, { ...final, message: { role: 'assistant', content: toks.join('') } });
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    for (const t of toks) {
      res.write(`${JSON.stringify({ model: body.model, created_at, message: { role: 'assistant', content: t }, done: false })}\n`);
      await sleep(1);
    }
    res.end(`${JSON.stringify({ ...final, message: { role: 'assistant', content: '' } })}\n`);
  }
}
