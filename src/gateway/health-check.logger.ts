import { ConsoleLogger, Injectable, Logger, type LoggerService } from '@nestjs/common';

/**
 * Terminus's logger. Its default writes an error-level line for every failing health check, and
 * a readiness probe fails for as long as any route is degraded: one upstream's incident became an
 * error line every few seconds. This one says it as a warning when what fails changes (which
 * checks are down, which endpoints degraded; not the figures beside them), and again at most every
 * REPEAT_MS while it stays the same (Terminus says nothing when checks pass, so a failure that
 * came back after a recovery is told then at the latest).
 */
@Injectable()
export class HealthCheckLogger extends ConsoleLogger implements LoggerService {
  private readonly logger = new Logger('Health');
  private last?: string;
  private lastAt = 0;

  override error(message: unknown): void {
    const text = typeof message === 'string' ? message : JSON.stringify(message);
    const failing = whatFails(text);
    const now = Date.now();
    if (failing === this.last && now - this.lastAt < REPEAT_MS) return;
    this.last = failing;
    this.lastAt = now;
    this.logger.warn(text);
  }

  override log(): void {}
  override warn(): void {}
  override debug(): void {}
  override verbose(): void {}
}

const REPEAT_MS = 5 * 60_000;

/** "Health Check has failed! {json}": the checks not up and the endpoints named degraded. */
function whatFails(text: string): string {
  const at = text.indexOf('{');
  let details: Record<string, { status?: unknown; degraded_endpoints?: Array<{ model?: unknown; route?: unknown }> }>;
  try {
    details = JSON.parse(at >= 0 ? text.slice(at) : text) as typeof details;
  } catch {
    return text;
  }
  if (!details || typeof details !== 'object') return text;
  return Object.entries(details)
    .filter(([, v]) => v?.status !== 'up')
    .map(
      ([k, v]) =>
        `${k}:${String(v?.status)}:${(v?.degraded_endpoints ?? []).map((d) => `${String(d.model)}/${String(d.route)}`).join(',')}`,
    )
    .sort()
    .join(';');
}
