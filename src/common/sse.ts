import { Readable } from 'node:stream';
import { createParser, type EventSourceMessage } from 'eventsource-parser';

export interface SseEvent {
  event?: string;
  data: string;
  id?: string;
}

/**
 * Turns a byte stream into SSE events as they arrive, however the bytes are split (across
 * events, lines, or UTF-8 characters). Comments (`: keepalive`) are skipped.
 *
 * Stopping early does not destroy a Node stream passed in: the caller decides whether to read
 * the rest (keeping an HTTP connection reusable after `[DONE]`) or to destroy it.
 */
export async function* readSse(body: AsyncIterable<Uint8Array | string> | Readable): AsyncGenerator<SseEvent> {
  const pending: SseEvent[] = [];
  const parser = createParser({
    onEvent: (m: EventSourceMessage) => pending.push({ event: m.event, data: m.data, id: m.id }),
  });
  const decoder = new TextDecoder('utf-8');
  const source = body instanceof Readable ? body.iterator({ destroyOnReturn: false }) : body;
  for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
    parser.feed(typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    while (pending.length > 0) yield pending.shift() as SseEvent;
  }
  // As the SSE spec says, an event cut off before its blank line is discarded: the stream
  // was truncated, and the caller notices the missing end of stream.
}

/** One SSE `data:` event carrying JSON. */
export function sseData(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';
export const SSE_KEEPALIVE = ': keepalive\n\n';
