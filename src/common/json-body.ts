import type { NextFunction, Request, Response } from 'express';
import { StringDecoder } from 'node:string_decoder';
import { sendSurfaceError } from './anthropic-error';
import { RequestBodyError } from './errors';
import { onSocketClose } from './socket-close';

/**
 * Reads a JSON request body. express.json (body-parser, raw-body, iconv) cost ~4% of the
 * gateway's CPU under load for features this API does not use (form bodies, charsets other than
 * UTF-8, Latin-1 and UTF-16LE, which are refused with 415); this reads the bytes, enforces the
 * size limit before and while reading, and parses.
 * Any declared content type is read as JSON, because `curl -d` sends form encoding by default.
 * Refusals are in OpenAI's error shape, or Anthropic's on the Anthropic surface's paths. On the
 * model endpoints (`framed`) the refusal is left on the request for the handler's frame, which
 * answers it after the key check and logs it like any other refused request.
 */
export function jsonBody(options: JsonBodyOptions) {
  const {
    limitBytes,
    limitText,
    framed = () => false,
    idleTimeoutMs = 0,
    pace = { minBytesPerSecond: 0, graceMs: 0 },
    refusedBeforeBody,
    routed,
  } = options;
  const tooLargeText = `The request body exceeds the limit of ${limitText} (BODY_LIMIT)`;
  const stalledText = `No byte of the request body arrived for ${idleTimeoutMs / 1000} s (BODY_IDLE_TIMEOUT_MS); send the body without pauses`;
  const { minBytesPerSecond: minRate, graceMs } = pace;
  const tooSlowText = `The request body arrived slower than ${minRate} bytes/s after its first ${graceMs / 1000} s (BODY_MIN_BYTES_PER_SECOND, BODY_RATE_GRACE_MS)`;
  const tooDeepText = `The request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`;
  const tooWideText = `The request body has an object with more than ${MAX_JSON_OBJECT_MEMBERS} members`;
  const tooManyText = `The request body holds more than ${MAX_JSON_CONTAINERS} arrays and objects`;
  const tooLarge = (headers?: Record<string, string>) => new RequestBodyError(413, tooLargeText, 'request_too_large', null, headers);
  /** Answers now, or — on the model endpoints — leaves the refusal to the request frame (one log row). */
  const refuse = (req: Request, res: Response, next: NextFunction, err: RequestBodyError) => {
    if (framed(req.path)) {
      (req as Request & { [BODY_ERROR]?: RequestBodyError })[BODY_ERROR] = err;
      req.body = undefined;
      if (err.headers?.connection === 'close') res.setHeader('connection', 'close');
      return next();
    }
    // A path nothing serves is a 404 whatever its body (a typo in the path, sent with a body that
    // is not JSON, was told its JSON was bad).
    if (routed && !routed(req.method, req.path)) {
      req.body = undefined;
      if (err.headers?.connection === 'close') res.setHeader('connection', 'close');
      return next();
    }
    sendSurfaceError(req, res, err);
  };
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'DELETE' || req.method === 'OPTIONS') return next();
    // A model endpoint's caller the key check will refuse: its body is read and thrown away,
    // not kept and parsed (a parse of 10 MB costs up to 600 ms and hundreds of MB), before the
    // refusal. Asked first, when the check says so without a wait.
    if (!refusedBeforeBody || !framed(req.path)) return read(req, res, next, false);
    const refused = refusedBeforeBody(req);
    if (typeof refused === 'boolean') return read(req, res, next, refused);
    refused.then(
      (skip) => read(req, res, next, skip),
      () => read(req, res, next, false),
    );
  };

  function read(req: Request, res: Response, next: NextFunction, skip: boolean): void {
    if (req.destroyed) {
      // Gone while its key was looked up, its body with it (complete or not: a destroyed request
      // keeps none, and no 'end' or 'error' comes): as a client leaving mid-body ('error' below).
      if (skip) return next();
      return refuse(
        req,
        res,
        next,
        new RequestBodyError(499, req.complete ? CLOSED_DURING_KEY_CHECK : CLOSED_MID_BODY, 'client_closed_request'),
      );
    }
    const encoding = req.headers['content-encoding'];
    const transfer = req.headers['transfer-encoding'];
    const charset = charsetOf(req.headers['content-type']);
    const textEncoding = charset === undefined || charset === '' ? 'utf8' : CHARSETS.get(charset.toLowerCase());
    const windows1252 = charset !== undefined && WINDOWS_1252_LABELS.has(charset.toLowerCase());
    const declared = Number(req.headers['content-length']);
    // A body declared longer than is worth draining: answer and close, as the client announced
    // more than would be read anyway.
    const closeAfter = declared > DRAIN_LIMIT_BYTES ? CLOSE : undefined;
    const early =
      declared > limitBytes
        ? tooLarge(closeAfter)
        : encoding && encoding.toLowerCase() !== 'identity'
          ? new RequestBodyError(
              415,
              `Content-Encoding "${encoding}" is not supported; send the body uncompressed`,
              'unsupported_encoding',
              null,
              closeAfter,
            )
          : transfer !== undefined && hasCodingBesidesChunked(transfer)
            ? new RequestBodyError(
                415,
                `Transfer-Encoding "${transfer.slice(0, 100)}" is not supported; send the body uncompressed, chunked or with a Content-Length`,
                'unsupported_encoding',
                null,
                closeAfter,
              )
            : textEncoding === undefined
              ? new RequestBodyError(
                  415,
                  `The charset "${charset!.slice(0, 40)}" is not supported; send the JSON body as UTF-8`,
                  'unsupported_charset',
                  null,
                  closeAfter,
                )
              : undefined;
    // The body as it arrives: its one chunk, or (from a second) the text decoded so far. Decoding
    // each chunk as it comes lets its buffer go at once; holding them all for one concatenation
    // kept each large body twice in malloc's memory, which a burst of large bodies left
    // fragmented and held for good (idle after 50 x 9 MB bodies, three times: 562 MB RSS; decoded
    // as they arrive, 115-123 MB).
    let first: Buffer | undefined;
    let decoder: StringDecoder | undefined;
    let decoded = '';
    const drop = () => {
      first = undefined;
      decoder = undefined;
      decoded = '';
    };
    let size = 0;
    /** Every byte of the body that arrived, those thrown away after a refusal too (the pace counts them). */
    let received = 0;
    let failed = false;
    /** From a refusal while the body is still arriving (413, 415): the bytes read and thrown away since. */
    let discarded = -1;
    // A client that stops sending mid-body would otherwise hold its connection and everything
    // read so far until Node's five-minute request timeout, which answers without a request id.
    const stalled =
      idleTimeoutMs > 0
        ? setTimeout(() => {
            if (req.destroyed) return; // gone: 'error' saw it
            if (answerDeferred()) return; // the rest of the body is not coming: answered now, and closed
            if (failed) return void req.destroy(); // answered already; the rest of the body is not coming
            failed = true;
            drop();
            refuse(req, res, next, new RequestBodyError(408, stalledText, 'request_timeout', null, { connection: 'close' }));
          }, idleTimeoutMs).unref()
        : undefined;
    // Refused while the client is still sending: answer at once, but read the rest and throw it
    // away rather than close. Closing with unread bytes makes the kernel reset the connection, and
    // a client that sends its whole body before reading (Python's http.client, Node's fetch) then
    // sees a broken pipe instead of the answer. Past DRAIN_LIMIT_BYTES (or when the client stops
    // sending for the idle timeout) the connection is cut.
    const discard = (err: RequestBodyError) => {
      failed = true;
      discarded = 0;
      drop();
      draining.add(req.socket);
      // A connection that closes after its answer (the client sent `Connection: close`, or spoke
      // HTTP/1.0) is answered once the body is read: the close would otherwise come with unread
      // bytes, a reset, and the client would see a broken pipe instead of the answer. Only with an
      // idle limit, which answers a client that stops sending.
      if (idleTimeoutMs > 0 && res.shouldKeepAlive === false && !req.complete && !(declared > DRAIN_LIMIT_BYTES)) deferred = err;
      else refuse(req, res, next, err);
    };
    // A client that sends, but too slowly to matter (a byte every few seconds keeps the idle
    // limit from firing), would hold its connection, a file descriptor and what was read for as
    // long as it likes, before any key is checked: a thousand such connections took a gateway
    // with 1,024 descriptors offline. After the grace the body must have come at `minRate` on
    // average (Apache's mod_reqtimeout rule): the timer fires when the bytes so far stop paying
    // for the time, and is set again for the time they still pay for.
    const startedAt = performance.now();
    const paceDue = () => graceMs + (received / minRate) * 1000 - (performance.now() - startedAt);
    const onPace = () => {
      if (req.destroyed || req.complete) return;
      const due = paceDue();
      if (due > 0) return void (paced = setTimeout(onPace, due + 1).unref());
      paced = undefined;
      clearTimeout(stalled);
      if (failed) return cutAfterAnswer(); // refused already: the rest is not worth waiting for
      failed = true;
      drop();
      refuse(req, res, next, new RequestBodyError(408, tooSlowText, 'request_timeout', null, { connection: 'close' }));
    };
    let paced = minRate > 0 ? setTimeout(onPace, graceMs).unref() : undefined;
    // A connection that closes once its answer is out, the rest of a refused body unread, tells
    // the request nothing (Node no longer tracks it): its timers, and this closure, went on for
    // as long as the pace allowed (minutes). They stop with the socket.
    const socket = req.socket;
    const stop = () => {
      clearTimeout(stalled);
      clearTimeout(paced);
    };
    const stops = onSocketClose(socket);
    stops.add(stop);
    /** A refusal held until the refused body has been read (see discard); `next`: the key check's. */
    let deferred: RequestBodyError | 'next' | undefined;
    const answerDeferred = (): boolean => {
      if (!deferred) return false;
      const err = deferred;
      deferred = undefined;
      if (err === 'next') next();
      else refuse(req, res, next, err);
      return true;
    };
    /** Cuts the connection: at once, or after a refusal still held has been answered (and logged). */
    const cutAfterAnswer = () => {
      if (!answerDeferred()) return void req.destroy();
      const cut = () => req.destroy();
      res.once('finish', cut);
      res.once('close', cut);
      setTimeout(cut, 5000).unref();
    };
    req.on('data', (chunk: Buffer) => {
      stalled?.refresh();
      received += chunk.length;
      if (failed) {
        if (discarded >= 0 && (discarded += chunk.length) > DRAIN_LIMIT_BYTES) {
          clearTimeout(stalled);
          discarded = -1; // counted no more: the connection is cut now, or once the answer is out
          // Past what is worth reading: a refusal still held is answered (and logged), then cut.
          clearTimeout(paced);
          cutAfterAnswer();
        }
        return;
      }
      size += chunk.length;
      if (size > limitBytes) return discard(tooLarge());
      if (first === undefined && decoder === undefined) first = chunk;
      else {
        if (decoder === undefined) {
          decoder = new StringDecoder(textEncoding);
          decoded = decoder.write(first!);
          first = undefined;
        }
        decoded += decoder.write(chunk);
      }
    });
    req.on('end', () => {
      stop();
      stops.delete(stop);
      if (discarded >= 0) draining.delete(req.socket);
      if (answerDeferred() || failed) return;
      if (size === 0) {
        req.body = undefined;
        return next();
      }
      let text = decoder ? decoded + decoder.end() : first!.toString(textEncoding);
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a byte order mark, which JSON allows readers to ignore
      if (windows1252) text = fromWindows1252(text);
      // The listeners, and so this closure, live as long as the request: let the body go now.
      drop();
      const shape = shapeProblem(text, MAX_JSON_OBJECT_MEMBERS, MAX_JSON_DEPTH);
      if (shape)
        return refuse(
          req,
          res,
          next,
          new RequestBodyError(400, shape === 'wide' ? tooWideText : shape === 'many' ? tooManyText : tooDeepText, 'invalid_json', 'body'),
        );
      try {
        req.body = JSON.parse(text);
      } catch (err) {
        return refuse(
          req,
          res,
          next,
          new RequestBodyError(400, `The request body is not valid JSON: ${jsonSyntaxError(err)}`, 'invalid_json', 'body'),
        );
      }
      if (nestingExceeds(req.body, MAX_JSON_DEPTH))
        return refuse(req, res, next, new RequestBodyError(400, tooDeepText, 'invalid_json', 'body'));
      next();
    });
    req.on('error', () => {
      stop();
      stops.delete(stop);
      // Refused, and gone before the rest of its body came: the refusal is still its answer and row.
      if (answerDeferred() || failed || req.complete) return;
      failed = true;
      drop();
      // The client went away mid-body. Nothing can be answered, but on a model endpoint the
      // request is logged, as one abandoned later would be.
      if (framed(req.path)) refuse(req, res, next, new RequestBodyError(499, CLOSED_MID_BODY, 'client_closed_request'));
    });
    if (skip) {
      // Thrown away as it comes (under the same limits of pace and size); the key check answers,
      // once the body is read on a connection that closes after it (as discard does).
      failed = true;
      discarded = 0;
      drop();
      draining.add(req.socket);
      req.body = undefined;
      if (closeAfter) res.setHeader('connection', 'close');
      // (Not one that waits for a 100 Continue it was not sent: its body may never come.)
      const waitsForContinue = /100-continue/i.test(String(req.headers.expect ?? ''));
      if (idleTimeoutMs > 0 && res.shouldKeepAlive === false && !req.complete && !closeAfter && !waitsForContinue) deferred = 'next';
      else next();
      return;
    }
    if (early) discard(early);
  }
}

/** What the body reader is told: its limits, and what it may ask of the rest of the gateway. */
export interface JsonBodyOptions {
  /** BODY_LIMIT in bytes, and as the operator wrote it (for the 413's message). */
  limitBytes: number;
  limitText: string;
  /** Whether a path is a model endpoint, whose refusals the request frame answers and logs. */
  framed?: (path: string) => boolean;
  /** BODY_IDLE_TIMEOUT_MS; 0: none of ours. */
  idleTimeoutMs?: number;
  pace?: BodyPace;
  /** Whether the key check will refuse a model endpoint's caller: its body is then thrown away unread. */
  refusedBeforeBody?: (req: Request) => boolean | Promise<boolean>;
  /** Whether a route serves a method at a path (a refused body on a path none serves is a 404). */
  routed?: (method: string, path: string) => boolean;
}

/** The least pace a request body must keep after its first `graceMs` (0 bytes/s: no such limit). */
export interface BodyPace {
  minBytesPerSecond: number;
  graceMs: number;
}

const CLOSE = { connection: 'close' };

/**
 * Connections reading the rest of a body already refused and answered. Node's parser may still
 * fail on that rest (broken chunked framing); the request has had its answer, so the connection
 * is then closed without a second one.
 */
export const draining = new WeakSet<object>();

const CLOSED_MID_BODY = 'The client closed the connection before its request body had arrived';
const CLOSED_DURING_KEY_CHECK = 'The client closed the connection while its API key was checked';

/** How much of a refused body is read and thrown away before the connection is cut instead. */
export const DRAIN_LIMIT_BYTES = 64 * 1024 * 1024;

const BODY_ERROR = Symbol('bodyError');

/** The body reader's refusal of this request, left for the request frame to answer and log. */
export function bodyErrorOf(req: Request): RequestBodyError | undefined {
  return (req as Request & { [BODY_ERROR]?: RequestBodyError })[BODY_ERROR];
}

/**
 * How deep a body may nest. JSON.parse takes thousands of levels, but serialising such a value
 * again (to send it upstream) overflows the stack; no API this gateway serves needs more than a
 * few levels (OpenAI allows 10 in a structured-output schema).
 */
export const MAX_JSON_DEPTH = 128;

/**
 * How many members one object of a body may have. No API this gateway serves needs more than a
 * few hundred (OpenAI takes 300 logit_bias entries, a schema some hundreds of properties); V8
 * keeps an object with very many keys as a dictionary, slow to parse, walk and copy: 700,000
 * members in 8 MB held the event loop for 6 s on their way upstream.
 */
export const MAX_JSON_OBJECT_MEMBERS = 10_000;

/**
 * How many arrays and objects one body may hold in all. Each costs V8 far more than its two
 * characters: 3.5 million empty arrays in 10 MB took JSON.parse 616 ms and 243 MB, and eight
 * such bodies at once (read before the key is checked) 1.3 GB, with /health answering in 6 s. A
 * chat of 100,000 messages with content parts holds some 300,000.
 */
export const MAX_JSON_CONTAINERS = 500_000;

/**
 * Whether some object in the JSON text has more than `members` members (`wide`), or arrays and
 * objects nest more than `depth` levels (`deep`), found before parsing: such a body costs a scan,
 * not a parse (a body nested 4.9 million levels took JSON.parse 3.7 s). A member takes at least
 * five characters (`"":0,`), so texts too short to hold more are not scanned (parsed, their
 * depth is checked by nestingExceeds); strings are skipped whole with indexOf. Text that is not
 * JSON may be answered either way: JSON.parse refuses it next.
 */
export function shapeProblem(
  text: string,
  members: number,
  depth: number,
  containers = MAX_JSON_CONTAINERS,
): 'wide' | 'deep' | 'many' | undefined {
  if (text.length <= members * 5 && text.length <= containers * 2) return undefined;
  // Per open container: the commas seen so far in an object, -1 for an array.
  const commas: number[] = [];
  let opened = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let end = i;
      for (;;) {
        end = text.indexOf('"', end + 1);
        if (end < 0) return undefined;
        let slashes = 0;
        while (text.charCodeAt(end - 1 - slashes) === 0x5c) slashes++;
        if (slashes % 2 === 0) break;
      }
      i = end;
    } else if (c === 0x7b || c === 0x5b) {
      if (commas.push(c === 0x7b ? 0 : -1) > depth) return 'deep';
      if (++opened > containers) return 'many';
    } else if (c === 0x7d || c === 0x5d) commas.pop();
    else if (c === 0x2c) {
      const top = commas.length - 1;
      if (top >= 0 && commas[top] >= 0 && ++commas[top] >= members) return 'wide';
    }
  }
  return undefined;
}

/**
 * Whether a parsed JSON value nests arrays and objects deeper than `max` levels. It visits each
 * array and object once (strings are leaves, never scanned) and stops `max` levels down, so its
 * own recursion is bounded; a chat body of 7 KB takes about a microsecond.
 */
export function nestingExceeds(value: unknown, max: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (max <= 0) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (nestingExceeds(item, max - 1)) return true;
    return false;
  }
  const obj = value as Record<string, unknown>;
  for (const key in obj) if (nestingExceeds(obj[key], max - 1)) return true;
  return false;
}

/**
 * The charsets a body may declare, and how it is decoded. JSON is UTF-8 (RFC 8259), but older
 * HTTP clients label it ISO-8859-1 (Apache HttpClient's default for a string entity), which reads
 * exactly as Latin-1; US-ASCII is a subset of both. Others (UTF-16 with its byte order in the
 * text, Windows code pages) are refused with 415 rather than read into a garbled prompt.
 */
const CHARSETS: ReadonlyMap<string, BufferEncoding> = new Map([
  ['utf-8', 'utf8'],
  ['utf8', 'utf8'],
  ['us-ascii', 'utf8'],
  ['ascii', 'utf8'],
  ['iso-8859-1', 'latin1'],
  ['latin1', 'latin1'],
  // Windows' Latin page: read as Latin-1, then 0x80-0x9F mapped (fromWindows1252).
  ['windows-1252', 'latin1'],
  ['cp1252', 'latin1'],
  ['utf-16le', 'utf16le'],
]);

const WINDOWS_1252_LABELS: ReadonlySet<string> = new Set(['windows-1252', 'cp1252']);

/**
 * Windows-1252's characters at 0x80-0x9F (the euro sign, curly quotes, dashes, ...), where
 * Latin-1 has control codes; the five it leaves undefined stay as they are, as the WHATWG
 * Encoding Standard has it. (Node's own TextDecoder reads this label as Latin-1.)
 */
const WINDOWS_1252_HIGH = '€\u0081‚ƒ„…†‡ˆ‰Š‹Œ\u008dŽ\u008f\u0090‘’“”•–—˜™š›œ\u009džŸ';

function fromWindows1252(latin1: string): string {
  return latin1.replace(/[\u0080-\u009f]/g, (c) => WINDOWS_1252_HIGH[c.charCodeAt(0) - 0x80]);
}

/**
 * Whether a Transfer-Encoding names a coding other than chunked (and identity, which says
 * nothing): a compressed one (gzip, deflate, compress). Node's parser undoes the chunked framing
 * only, so the body would be read as the compressed bytes.
 */
function hasCodingBesidesChunked(transferEncoding: string): boolean {
  if (transferEncoding === 'chunked') return false;
  return transferEncoding.split(',').some((coding) => {
    const name = coding.split(';')[0].trim().toLowerCase();
    return name !== 'chunked' && name !== 'identity' && name !== '';
  });
}

/** The `charset` parameter of a Content-Type, unquoted; undefined when there is none. */
function charsetOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined || !contentType.includes('=')) return undefined;
  return /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/i
    .exec(contentType)
    ?.slice(1)
    .find((v) => v !== undefined);
}

/**
 * What JSON.parse said was wrong, without the stretch of the text V8 quotes (`Unexpected token
 * 's', ..."content": sk-abc"... is not valid JSON`): the message goes to the log and the request's
 * row, and the text around a typo may be a key or a prompt.
 */
export function jsonSyntaxError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/, (?:\.\.\.)?".*"(?:\.\.\.)? is not valid JSON$/s, '');
}

/**
 * JSON a request carries inside a string (tool-call arguments, tool results) that an adapter
 * sends on as JSON: parsed, and held to the limits a body is (MAX_JSON_DEPTH: serialising it
 * again would overflow the stack; MAX_JSON_OBJECT_MEMBERS and MAX_JSON_CONTAINERS: its cost).
 * Throws a SyntaxError for text that is not JSON, a RangeError for JSON past a limit.
 */
export function parseEmbeddedJson(text: string): unknown {
  // Its shape before the parse, as a body's: the body's own check saw only a string.
  const shape = shapeProblem(text, MAX_JSON_OBJECT_MEMBERS, MAX_JSON_DEPTH);
  if (shape === 'wide') throw new RangeError(`has an object of more than ${MAX_JSON_OBJECT_MEMBERS} members`);
  if (shape === 'many') throw new RangeError(`holds more than ${MAX_JSON_CONTAINERS} arrays and objects`);
  if (shape === 'deep') throw new RangeError(`nests deeper than ${MAX_JSON_DEPTH} levels`);
  const value = JSON.parse(text) as unknown;
  if (nestingExceeds(value, MAX_JSON_DEPTH)) throw new RangeError(`nests deeper than ${MAX_JSON_DEPTH} levels`);
  return value;
}
