import type { Dispatcher } from 'undici';

/**
 * How Claude Code presents itself to the Messages API with a subscription (OAuth) login, as
 * working third-party clients send it (research notes §3; the exact set changes with Claude
 * Code's versions): a Bearer token and no `x-api-key`, the OAuth beta, `x-app: cli`, a
 * `claude-cli/<version>` user agent, and a first system block that is Claude Code's identity.
 */

/** The Claude Code release the user agent names (route option `client_version`). */
export const CLAUDE_CODE_VERSION = '2.1.2';

/** Betas every Claude Code request carries; `oauth-2025-04-20` is required with an OAuth token. */
export const CLAUDE_CODE_BETAS = ['claude-code-20250219', 'oauth-2025-04-20'] as const;

/**
 * The system prompt's first block for OAuth tokens. Several independent clients report that the
 * API refuses subscription requests whose system prompt does not start with it.
 */
export const CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude.";

export function claudeCodeUserAgent(version: string): string {
  return `claude-cli/${version} (external, cli)`;
}

type SystemBlock = { type: string; text?: unknown; [k: string]: unknown };

/**
 * A Messages body whose system prompt starts with Claude Code's identity: added as the first
 * text block (a string system prompt becomes blocks), never twice.
 */
export function withClaudeCodeIdentity<T extends { system?: unknown }>(body: T): T {
  const identity = { type: 'text', text: CLAUDE_CODE_IDENTITY };
  const system = body.system;
  if (system === undefined || system === null || system === '') return { ...body, system: [identity] };
  if (typeof system === 'string')
    return system.startsWith(CLAUDE_CODE_IDENTITY) ? body : { ...body, system: [identity, { type: 'text', text: system }] };
  if (Array.isArray(system)) {
    const first = system[0] as SystemBlock | undefined;
    if (first?.type === 'text' && typeof first.text === 'string' && first.text.startsWith(CLAUDE_CODE_IDENTITY)) return body;
    return { ...body, system: [identity, ...(system as SystemBlock[])] };
  }
  return body;
}

/**
 * When a rate-limited subscription may be used again (epoch ms): Anthropic's
 * `anthropic-ratelimit-unified-reset` (epoch seconds) when the subscription's limit is spent,
 * else `retry-after` (seconds or an HTTP date); undefined when neither says. A 429 whose
 * `anthropic-ratelimit-unified-status` is not `rejected` (`allowed`, `allowed_warning`: too many
 * connections at once, say) leaves the subscription's quota as it was, so the window's reset
 * (up to five hours away) is not when it may be used again. `limitReached`: the limit is known to
 * be spent another way (a rate-limit error event in a stream whose headers, sent at its start,
 * said `allowed`).
 */
export function subscriptionResetAt(
  headers: Dispatcher.ResponseData['headers'],
  now = Date.now(),
  limitReached = headerValue(headers, 'anthropic-ratelimit-unified-status') === 'rejected',
): number | undefined {
  const unified = headerValue(headers, 'anthropic-ratelimit-unified-reset');
  const status = headerValue(headers, 'anthropic-ratelimit-unified-status');
  if (unified !== undefined && (status === undefined || limitReached) && /^\d+(\.\d+)?$/.test(unified)) {
    const n = Number(unified);
    // Seconds, as documented; a value in milliseconds is taken as it is.
    return n > 1e12 ? n : n * 1000;
  }
  const ra = headerValue(headers, 'retry-after');
  if (ra === undefined) return undefined;
  if (/^\d+(\.\d+)?$/.test(ra)) return now + Number(ra) * 1000;
  const at = Date.parse(ra);
  return Number.isNaN(at) ? undefined : at;
}

function headerValue(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return typeof s === 'string' && s.trim() !== '' ? s.trim() : undefined;
}
