import { Readable } from 'node:stream';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { HELD_TEXT_LIMIT, HeldText, HeldTextLimit } from './held-text';

export interface SseEvent {
  event?: string;
  data: string;
  id?: string;
}

/**
 * Decodes SSE incrementally: feed it bytes as they arrive, however they are split (across events,
 * lines or UTF-8 characters), and get back the events they complete. Comments (`: keepalive`)
 * are skipped. Synchronous, so an adapter parses inside its own read loop without an extra
 * async-generator hop per chunk. As the SSE spec says, an event cut off before its blank line is
 * never returned: the stream was truncated, and the caller notices the missing end of stream.
 */
/** A stream event past the decoder's limit: the server's fault, and no reason to ask it again. */
export class SseEventTooLarge extends Error {}

export class SseDecoder {
  private readonly decoder = new TextDecoder('utf-8');
  private pending: SseEvent[] = [];
  /** Characters fed since the last complete event: what the parser is holding. */
  private held = 0;
  /** The same, counted with what every other request holds (HeldText). */
  private readonly holding = new HeldText();
  private readonly parser = createParser({
    onEvent: (m: EventSourceMessage) => this.pending.push({ event: m.event, data: m.data, id: m.id }),
  });

  /** The first character fed that is not white space, once one came. */
  private first?: number;

  /** `maxEventChars`: an event not complete within this many characters fails the stream. */
  constructor(private readonly maxEventChars = MAX_EVENT_CHARS) {}

  /**
   * Text came, and it does not start as an event stream does (a comment or a field, after a BOM
   * if any): a page, or a whole JSON answer, where events were asked for.
   */
  get notEventStream(): boolean {
    return this.first !== undefined && !SSE_LINE_STARTS.has(this.first);
  }

  push(chunk: Uint8Array | string): SseEvent[] {
    const text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    if (this.first === undefined) this.first = firstNonBlank(text);
    this.parser.feed(text);
    if (this.pending.length === 0) {
      this.held += text.length;
      // A misbehaving server must not make the gateway hold an unbounded event in memory.
      if (this.held > this.maxEventChars) throw new SseEventTooLarge(`sent a stream event longer than ${this.maxEventChars} characters`);
      // Nor many large ones at once, across requests.
      if (!this.holding.add(text.length))
        throw new HeldTextLimit(
          `sent a stream event of over ${this.held} characters while the gateway held its limit of ${HELD_TEXT_LIMIT} of unfinished upstream answers`,
        );
      return NONE;
    }
    this.held = 0;
    if (this.holding.size > 0) this.holding.release();
    const out = this.pending;
    this.pending = [];
    return out;
  }

  /** The stream is over (ended, failed or left): what its unfinished event held is no longer counted. */
  close(): void {
    this.holding.release();
  }
}

/** How a line of an event stream starts: a comment (`:`) or a field (data, event, id, retry); or a BOM. */
const SSE_LINE_STARTS: ReadonlySet<number> = new Set([...[':', 'd', 'e', 'i', 'r'].map((c) => c.charCodeAt(0)), 0xfeff]);

/** The first character code of `text` that is not a space, tab, CR or LF; undefined if none. */
function firstNonBlank(text: string): number | undefined {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d && c !== 0x0a) return c;
  }
  return undefined;
}

/** No model's chunk comes near it; a whole answer in one event still fits. */
export const MAX_EVENT_CHARS = 32 * 1024 * 1024;

const NONE: SseEvent[] = [];

/**
 * The chunks of a response body. A Node stream is not destroyed when the caller stops early: the
 * caller decides whether to read the rest (keeping an HTTP connection reusable after `[DONE]`)
 * or to destroy it.
 */
export function bodyChunks(body: AsyncIterable<Uint8Array | string> | Readable): AsyncIterable<Uint8Array | string> {
  return body instanceof Readable ? body.iterator({ destroyOnReturn: false }) : body;
}

/** SSE events from a byte stream (a convenience over SseDecoder). */
export async function* readSse(body: AsyncIterable<Uint8Array | string> | Readable): AsyncGenerator<SseEvent> {
  const decoder = new SseDecoder();
  try {
    for await (const chunk of bodyChunks(body)) yield* decoder.push(chunk);
  } finally {
    decoder.close();
  }
}

/** One SSE `data:` event carrying JSON. */
export function sseData(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';
export const SSE_KEEPALIVE = ': keepalive\n\n';
