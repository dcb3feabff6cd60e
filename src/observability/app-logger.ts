import { once } from 'node:events';
import type { LoggerService } from '@nestjs/common';
import pino, { type Logger } from 'pino';

const REDACT = [
  'authorization',
  'headers.authorization',
  'headers["x-api-key"]',
  '*.authorization',
  '*.api_key',
  '*.apiKey',
  '*.api_keys',
  '*.password',
  '*.token',
  '*.access_token',
  '*.refresh_token',
];

/** The parts of pino's asynchronous destination (sonic-boom) that flush() relies on. */
interface SonicBoomLike {
  flushSync(): void;
  on(event: string, listener: () => void): unknown;
  /** Private to sonic-boom 4, read-only here: true while an asynchronous write is under way. */
  _writing: boolean;
}

/**
 * Structured JSON logs through pino, also used for Nest's own messages; secrets are redacted by
 * key. Lines about one request (its access line, an internal error while serving it) carry its
 * id as `reqId`, passed explicitly: there is no ambient request context (see request-context.ts).
 */
export class AppLogger implements LoggerService {
  readonly pino: Logger;
  /**
   * The one-line-per-request access log. Its fields are chosen by the gateway and never hold
   * secrets, so it skips the redaction pass (1% of CPU under load); same destination and format.
   */
  readonly access: Logger;
  private readonly destination: pino.DestinationStream;

  constructor(level: string, destination?: pino.DestinationStream) {
    const dest = destination ?? pino.destination({ dest: 1, sync: false });
    this.destination = dest;
    const options: pino.LoggerOptions = {
      level: pino.levels.values[level] !== undefined || level === 'silent' ? level : 'info',
      // The pid tells a WORKERS gateway's processes apart in one log stream.
      base: { service: 'hybridinference', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    };
    this.pino = pino(
      {
        ...options,
        redact: { paths: REDACT, censor: '[redacted]' },
      },
      dest,
    );
    this.access = pino(options, dest);
  }

  log(message: unknown, context?: string): void {
    this.write('info', message, context);
  }
  error(message: unknown, stackOrContext?: string, context?: string): void {
    const ctx = context ?? (stackOrContext && !stackOrContext.includes('\n') ? stackOrContext : undefined);
    const stack = stackOrContext && stackOrContext.includes('\n') ? stackOrContext : undefined;
    if (message instanceof Error) this.pino.error({ context: ctx, err: message }, message.message);
    else this.pino.error({ context: ctx, stack }, String(message));
  }
  warn(message: unknown, context?: string): void {
    this.write('warn', message, context);
  }
  debug(message: unknown, context?: string): void {
    this.write('debug', message, context);
  }
  verbose(message: unknown, context?: string): void {
    this.write('trace', message, context);
  }
  fatal(message: unknown, context?: string): void {
    this.write('fatal', message, context);
  }

  /**
   * Resolves once every line logged so far is written, or after `timeoutMs` (stdout may be a pipe
   * nobody reads). To be awaited before the process ends by a signal, which skips the 'exit' event
   * where pino flushes. pino's own flush() does not wait: the destination (SonicBoom, minLength 0)
   * calls back at once, with the last write possibly still in flight.
   */
  async flush(timeoutMs = 1000): Promise<void> {
    const dest = this.destination as pino.DestinationStream & Partial<SonicBoomLike>;
    if (typeof dest.flushSync !== 'function' || typeof dest.on !== 'function') return; // a test's line collector
    // While a write is under way the rest waits behind it; 'drain' comes when all is written.
    // flushSync() then would write those lines ahead of it, or see it lost if the process ends.
    if (dest._writing) {
      const timeout = AbortSignal.timeout(timeoutMs);
      await once(dest as unknown as NodeJS.EventEmitter, 'drain', { signal: timeout }).catch(() => undefined);
    }
    try {
      dest.flushSync();
    } catch {
      // Destroyed, or stdout refuses more: nothing better can be done on the way out.
    }
  }

  private write(level: 'info' | 'warn' | 'debug' | 'trace' | 'fatal', message: unknown, context?: string): void {
    if (!this.pino.isLevelEnabled(level)) return;
    if (typeof message === 'object' && message !== null && !(message instanceof Error)) this.pino[level]({ context, ...message });
    else this.pino[level]({ context }, String(message));
  }
}
