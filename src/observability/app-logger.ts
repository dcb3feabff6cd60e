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

  constructor(level: string, destination?: pino.DestinationStream) {
    const dest = destination ?? pino.destination({ dest: 1, sync: false });
    const options: pino.LoggerOptions = {
      level: pino.levels.values[level] !== undefined || level === 'silent' ? level : 'info',
      base: { service: 'hybridinference' },
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

  flush(): void {
    this.pino.flush();
  }

  private write(level: 'info' | 'warn' | 'debug' | 'trace' | 'fatal', message: unknown, context?: string): void {
    if (!this.pino.isLevelEnabled(level)) return;
    if (typeof message === 'object' && message !== null && !(message instanceof Error)) this.pino[level]({ context, ...message });
    else this.pino[level]({ context }, String(message));
  }
}
