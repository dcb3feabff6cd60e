import { storableTime } from './expiry';

/**
 * Reads the claims of a JWT without verifying it: the gateway only learns from its own tokens
 * (expiry, the ChatGPT account id); the provider verifies them.
 */
export function jwtClaims(token: string | undefined): Record<string, unknown> | undefined {
  if (!token) return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const json = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as unknown;
    return json && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `exp` as epoch ms. */
export function jwtExpiry(token: string | undefined): number | null {
  const exp = jwtClaims(token)?.exp;
  // A claim past year 9999 (or before 1970) is as good as none: it cannot be stored as a date.
  return typeof exp === 'number' ? (storableTime(exp * 1000) ?? null) : null;
}

const OPENAI_AUTH = 'https://api.openai.com/auth';
const OPENAI_PROFILE = 'https://api.openai.com/profile';

export interface ChatGptIdentity {
  accountId?: string;
  planType?: string;
  email?: string;
}

/** The ChatGPT account (workspace) id, plan and email in a Codex id or access token. */
export function chatGptIdentity(token: string | undefined): ChatGptIdentity {
  const claims = jwtClaims(token);
  if (!claims) return {};
  const auth = (claims[OPENAI_AUTH] ?? {}) as Record<string, unknown>;
  const profile = (claims[OPENAI_PROFILE] ?? {}) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  return { accountId: str(auth.chatgpt_account_id), planType: str(auth.chatgpt_plan_type), email: str(claims.email) ?? str(profile.email) };
}
