import { Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { subscribe } from 'node:diagnostics_channel';
import { HELD_TEXT_LIMIT, HeldText, HeldTextLimit } from '../../common/held-text';
import { SseEventTooLarge } from '../../common/sse';
import { StringDecoder } from 'node:string_decoder';
import { Pool, errors as undiciErrors, type Dispatcher } from 'undici';
import { AppConfig, type UpstreamTimeouts } from '../../config/app-config';
import { raceAbort } from '../../common/abort';
import { UpstreamError } from '../../common/errors';

export interface UpstreamRequest {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  signal: AbortSignal;
  timeouts: UpstreamTimeouts;
  /** For error messages: which route and provider this call serves. */
  route: string;
  provider: string;
  /**
   * Called once the whole request has been written to the upstream's connection (not while it
   * waits for a connection of the pool, or for one to be made).
   */
  sent?: () => void;
}

/**
 * `sent` callbacks, by undici's request: undici says when a request's body has gone out only on
 * its diagnostics channels (its request API has no such hook). A request is made synchronously
 * inside `pool.request` when a connection of the pool is free; one the pool queues (all its
 * connections busy, UPSTREAM_MAX_CONNECTIONS) is made later, and gets no callback.
 */
const sentCallbacks = new WeakMap<object, () => void>();
let nextSent: (() => void) | undefined;
let sentChannels = false;

function watchSent(): void {
  if (sentChannels) return;
  sentChannels = true;
  subscribe('undici:request:create', (msg) => {
    if (!nextSent) return;
    sentCallbacks.set((msg as { request: object }).request, nextSent);
    nextSent = undefined;
  });
  subscribe('undici:request:bodySent', (msg) => {
    const request = (msg as { request: object }).request;
    const sent = sentCallbacks.get(request);
    if (!sent) return;
    sentCallbacks.delete(request);
    sent();
  });
}

/**
 * The one way adapters reach an upstream: a keep-alive undici pool per origin (and connect
 * timeout, which routes on one server may set apart), created on first use and kept for the
 * life of the process. Connection-level failures come back as typed
 * `UpstreamError`s; HTTP error statuses are left to the adapter, which knows its provider's
 * error body.
 */
@Injectable()
export class UpstreamClient implements OnApplicationShutdown {
  private readonly pools = new Map<string, Pool>();

  constructor(private readonly config: AppConfig) {}

  async request(req: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    let url: URL;
    try {
      url = new URL(req.url);
    } catch {
      throw new UpstreamError({
        failure: 'connect',
        message: `route ${req.route}: invalid upstream URL`,
        provider: req.provider,
        route: req.route,
        retryable: false,
      });
    }
    const pool = this.pool(url.origin, req.timeouts.connectMs);
    if (req.sent) {
      watchSent();
      nextSent = req.sent;
    }
    try {
      const pending = pool.request({
        path: url.pathname + url.search,
        method: req.method ?? 'POST',
        headers: req.headers,
        body: req.body,
        signal: req.signal,
        headersTimeout: req.timeouts.firstByteMs,
        // undici's body timeout also runs from the headers to the first body byte, and servers
        // that send their headers at once (vLLM, SGLang) send no byte of a stream until prefill
        // is done: that wait is the first token's, whose deadline the route executor keeps, as
        // it keeps the idle deadline once content flows. This one only backs them up, a second
        // later, so that it never fires first (on the same deadline it raced the executor's under
        // load, and the attempt was logged as a silence instead of a first-token timeout).
        bodyTimeout: backupBodyTimeout(req.timeouts),
      });
      nextSent = undefined;
      // undici does not heed the signal while it is connecting (a host that drops the SYN holds
      // the request for the whole connect timeout): the signal ends the wait here, and an answer
      // that comes after all is thrown away.
      const res = await raceAbort(pending, req.signal).catch((err: unknown) => {
        if (req.signal.aborted) pending.then((late) => late.body.destroy(), ignore);
        throw err;
      });
      // Destroying an unfinished body (client gone, stream cut short) emits 'error'. Readers
      // handle errors through their promises; this keeps a destroy with nobody reading from
      // becoming an unhandled 'error' event that would take the process down.
      res.body.on('error', ignore);
      return res;
    } catch (err) {
      nextSent = undefined; // pool.request threw before making its request
      throw this.toUpstreamError(err, req);
    }
  }

  /**
   * Maps undici/network errors (also those thrown while reading a body) to `UpstreamError`. A
   * TypeError or RangeError is the gateway's own code failing on what it read, not the network:
   * it stays as it is, for the route executor to log with its stack and classify.
   */
  toUpstreamError(err: unknown, req: CallInfo): Error {
    if (err instanceof UpstreamError) return err;
    const reason = req.signal.aborted ? req.signal.reason : undefined;
    if (reason instanceof UpstreamError) return reason;
    if (err instanceof TypeError || err instanceof RangeError) return err;
    const base = { provider: req.provider, route: req.route };
    const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
    const code = e?.code ?? e?.cause?.code;
    const detail = e?.cause?.message ?? e?.message ?? String(err);
    if (req.signal.aborted || err instanceof undiciErrors.RequestAbortedError || (err as Error)?.name === 'AbortError') {
      return new UpstreamError({ ...base, failure: 'aborted', message: 'the request was cancelled' });
    }
    if (err instanceof undiciErrors.HeadersTimeoutError || code === 'UND_ERR_HEADERS_TIMEOUT') {
      return new UpstreamError({
        ...base,
        failure: 'timeout',
        code: 'first_byte_timeout',
        message: `upstream ${req.route} sent no response within ${req.timeouts.firstByteMs} ms`,
      });
    }
    if (err instanceof undiciErrors.BodyTimeoutError || code === 'UND_ERR_BODY_TIMEOUT') {
      return new UpstreamError({
        ...base,
        failure: 'timeout',
        code: 'idle_timeout',
        message: `upstream ${req.route} went silent for ${backupBodyTimeout(req.timeouts)} ms`,
      });
    }
    // A timeout like the others: the next route at once (a host that drops connections does
    // not answer a second try sooner), and a 504 if none is left.
    if (err instanceof undiciErrors.ConnectTimeoutError || code === 'UND_ERR_CONNECT_TIMEOUT') {
      return new UpstreamError({
        ...base,
        failure: 'timeout',
        code: 'connect_timeout',
        message: `could not connect to upstream ${req.route} within ${req.timeouts.connectMs} ms`,
      });
    }
    if (
      code === 'ECONNREFUSED' ||
      code === 'ENOTFOUND' ||
      code === 'EAI_AGAIN' ||
      code === 'EHOSTUNREACH' ||
      code === 'ENETUNREACH' ||
      code?.startsWith('ERR_TLS') ||
      code?.startsWith('CERT_')
    ) {
      return new UpstreamError({ ...base, failure: 'connect', message: `upstream ${req.route} is unreachable (${code})` });
    }
    // The process holds too much unfinished upstream text at once: the gateway is overloaded, no
    // route's fault; the client may come back in a moment.
    if (err instanceof HeldTextLimit)
      return new UpstreamError({
        ...base,
        failure: 'protocol',
        status: 503,
        code: 'gateway_overloaded',
        message: `upstream ${req.route} ${err.message}`,
        gatewayFault: true,
        retryable: false,
        retryAfterMs: 1000,
      });
    // As an answer over UPSTREAM_BODY_LIMIT (answerTooLarge): the next route, not this one again,
    // and not against its circuit (an event that large may be what this request asked for).
    if (err instanceof SseEventTooLarge)
      return new UpstreamError({
        ...base,
        failure: 'protocol',
        code: ANSWER_TOO_LARGE,
        message: `upstream ${req.route} ${err.message}`,
        gatewayFault: true,
      });
    // A request undici would not send (a header value with a newline or a character past
    // Latin-1, from what a client sent): nothing reached the upstream, so it is no fault of the
    // endpoint's, and retrying it there changes nothing.
    if (err instanceof undiciErrors.InvalidArgumentError || code === 'UND_ERR_INVALID_ARG')
      return new UpstreamError({
        ...base,
        failure: 'protocol',
        message: `the request could not be sent to upstream ${req.route}: ${detail}`,
        gatewayFault: true,
      });
    if (
      code === 'ECONNRESET' ||
      code === 'EPIPE' ||
      code === 'UND_ERR_SOCKET' ||
      code === 'UND_ERR_CLOSED' ||
      err instanceof undiciErrors.SocketError
    ) {
      return new UpstreamError({
        ...base,
        failure: 'reset',
        message: `the connection to upstream ${req.route} broke (${code ?? 'socket closed'})`,
      });
    }
    return new UpstreamError({ ...base, failure: 'reset', message: `upstream ${req.route} failed: ${detail}` });
  }

  /**
   * Reads a whole success body as text, up to UPSTREAM_BODY_LIMIT: past it (declared, or as it
   * arrives) the body is destroyed, which closes the connection rather than read the rest to keep
   * it, and the call fails with `upstream_too_large`. Read whole without a limit, 8 concurrent
   * answers of 250 MB took the gateway to a peak of 5.9 GB RSS (8 GB in the probe that found
   * it), its /health to 19.7 s, and the answers 142 s; one of 600 MB failed on V8's longest
   * string with an error that named neither route nor cause. With the 64 MB default the same 8
   * were refused within 4.1 s, at a peak of 668 MB and /health under 240 ms. Each chunk is
   * decoded as it arrives, so its buffer goes at once (see json-body.ts).
   */
  async readAnswer(body: Dispatcher.ResponseData['body'], headers: Dispatcher.ResponseData['headers'], req: CallInfo): Promise<string> {
    const limit = this.config.upstreamBodyLimitBytes;
    const tooLarge = () => answerTooLarge(req, this.config.env.UPSTREAM_BODY_LIMIT);
    const declared = Number(headers['content-length']);
    if (declared > limit) {
      body.destroy();
      throw tooLarge();
    }
    const decoder = new StringDecoder('utf8');
    let text = '';
    let size = 0;
    // Counted with what every other request holds: many large answers at once must not fill the heap.
    const holding = new HeldText();
    try {
      for await (const chunk of body) {
        size += (chunk as Buffer).length;
        if (size > limit) throw tooLarge();
        if (!holding.add((chunk as Buffer).length))
          throw new HeldTextLimit(
            `answered ${size} bytes so far while the gateway held its limit of ${HELD_TEXT_LIMIT} of unfinished upstream answers`,
          );
        text += decoder.write(chunk as Buffer);
      }
    } catch (err) {
      if (!body.destroyed) body.destroy();
      const e = this.toUpstreamError(err, req);
      // Cut while it sent a success: the upstream made (and billed) the answer already. The next
      // route, not this one again (each retry here was one more answer paid for).
      throw e instanceof UpstreamError && e.failure === 'reset' ? e.with({ retryable: false }) : e;
    } finally {
      holding.release();
    }
    return text + decoder.end();
  }

  /** Pools are per origin and connect timeout: routes on one server may set different ones. */
  private pool(origin: string, connectTimeoutMs: number): Pool {
    const key = `${origin} ${connectTimeoutMs}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(origin, {
        connections: this.config.env.UPSTREAM_MAX_CONNECTIONS,
        pipelining: 1,
        keepAliveTimeout: this.config.env.UPSTREAM_KEEPALIVE_MS,
        connect: { timeout: connectTimeoutMs },
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  async onApplicationShutdown(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }
}

function ignore(): void {}

/** undici's body timeout: the route executor's first-token and idle deadlines, backed up a second later. */
function backupBodyTimeout(t: UpstreamTimeouts): number {
  return Math.max(t.idleMs, t.firstTokenMs) + 1000;
}

/** What a call is, for the errors of reading its answer. */
export type CallInfo = Pick<UpstreamRequest, 'signal' | 'timeouts' | 'route' | 'provider'>;

export const ANSWER_TOO_LARGE = 'upstream_too_large';

/**
 * An answer over UPSTREAM_BODY_LIMIT: a 502 naming the route and the cap, and the next route, as
 * for any answer the gateway cannot use (endpoints whose answer size the request fixes, such as
 * embeddings, turn it into a final one). It does not count against the route's circuit: a
 * request can ask for an answer that large (a batch of embeddings as floats), and that client's
 * requests must not take the route offline for everyone.
 */
function answerTooLarge(req: CallInfo, limitText: string): UpstreamError {
  return new UpstreamError({
    failure: 'protocol',
    code: ANSWER_TOO_LARGE,
    message: `upstream ${req.route} answered more than ${limitText} (UPSTREAM_BODY_LIMIT)`,
    provider: req.provider,
    route: req.route,
    gatewayFault: true,
  });
}

/** Reads at most `limit` bytes of a body as text (error bodies can be anything). */
export async function readBodyText(body: Dispatcher.ResponseData['body'], limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      if (size + buf.length > limit) {
        chunks.push(buf.subarray(0, limit - size));
        size = limit;
        break;
      }
      chunks.push(buf);
      size += buf.length;
    }
  } catch {
    // A broken error body still leaves us with what arrived.
  } finally {
    if (!body.destroyed) body.destroy();
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses Retry-After / retry-after-ms into milliseconds. */
export function retryAfterMs(headers: Dispatcher.ResponseData['headers'], now = Date.now()): number | undefined {
  const ms = headers['retry-after-ms'];
  if (typeof ms === 'string' && /^\d+(\.\d+)?$/.test(ms)) return Math.round(Number(ms));
  const ra = headers['retry-after'];
  if (typeof ra !== 'string') return undefined;
  if (/^\d+(\.\d+)?$/.test(ra.trim())) return Math.round(Number(ra) * 1000);
  const at = Date.parse(ra);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
