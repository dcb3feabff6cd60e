import { parseIsoDateUtc } from '../common/timestamp';
import { createHash } from 'node:crypto';
import type { AccountCredentials, SubscriptionProvider } from './subscription.types';
import { storableTime } from './expiry';
import { chatGptIdentity, jwtExpiry } from './jwt';
import { isJsonObject } from '../common/json-object';

/**
 * Recognises a login (its refresh token) applied before, without storing the token: SHA-256 over
 * a canonical form (a version tag, the provider, the refresh token). Refresh tokens are long random
 * strings, so the digest can be neither reversed nor guessed offline; no key is needed, so it
 * stays the same when SUBSCRIPTION_ENCRYPTION_KEY changes (a keyed one made a file's every entry
 * new again after a key rotation, rolling accounts back to spent tokens). 64 hex characters.
 */
export function loginFingerprint(provider: SubscriptionProvider, refreshToken: string): string {
  return createHash('sha256').update(`hybridinference-subscription-login-v2\n${provider}\n${refreshToken}`, 'utf8').digest('hex');
}

/** One account read from an import file or an admin request, before it is stored. */
export interface AccountInput {
  provider: SubscriptionProvider;
  name: string;
  credentials: AccountCredentials;
  /** Access-token expiry, epoch ms; null when unknown (refreshed on the first 401). */
  expiresAt: number | null;
  /** Codex: the ChatGPT account id sent as `chatgpt-account-id`. */
  externalAccountId: string | null;
  email: string | null;
  planType: string | null;
}

export interface ParsedAccounts {
  accounts: AccountInput[];
  /** `accounts[2].refresh_token: is required`, one per problem. */
  errors: string[];
}

type Obj = Record<string, unknown>;
const str = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined);

/**
 * Parses the content of `claude_accounts.json` or `codex_accounts.json` (or an admin import body).
 * Accepted: `{"accounts": [entry, ...]}`, a bare list of entries, or one entry on its own — which
 * covers Codex's `~/.codex/auth.json` and Claude Code's `~/.claude/.credentials.json` as they are.
 *
 * Claude entry: `{name, access_token, refresh_token, expires_at}` or `{name, claudeAiOauth:
 * {accessToken, refreshToken, expiresAt}}`. Codex entry: Codex's auth.json shape `{name, tokens:
 * {id_token, access_token, refresh_token, account_id}}` or flat `{name, access_token, refresh_token,
 * id_token?, account_id?}`. Entries without `name` are named, for Codex, by the login's email or
 * account id; for Claude, by position (`claude-1`) where `opts.positionalNames` allows it (the
 * import files), and otherwise refused.
 */
export function parseAccounts(
  provider: SubscriptionProvider,
  data: unknown,
  /**
   * Whether a Claude entry without a name is named by its place (`claude-1`): so in the import
   * files, whose entries keep their places; not through the admin API, where such a name could
   * be another login's, whose tokens the import would replace.
   */
  opts: { positionalNames: boolean } = { positionalNames: true },
): ParsedAccounts {
  let entries: unknown[];
  let base: string;
  if (Array.isArray(data)) {
    entries = data;
    base = '';
  } else if (isJsonObject(data) && Array.isArray(data.accounts)) {
    entries = data.accounts;
    base = 'accounts';
  } else if (isJsonObject(data)) {
    entries = [data];
    base = '';
  } else {
    return { accounts: [], errors: ['expected an object with an "accounts" list, a list of accounts, or one account object'] };
  }
  const accounts: AccountInput[] = [];
  const errors: string[] = [];
  entries.forEach((entry, i) => {
    const where = base ? `${base}[${i}]` : entries.length > 1 || Array.isArray(data) ? `[${i}]` : '(account)';
    if (!isJsonObject(entry)) {
      errors.push(`${where}: must be an object`);
      return;
    }
    const problems: string[] = [];
    // A name that was given must be usable: falling back to the automatic name could give this
    // login another account's name, and with it that account's place.
    if (entry.name !== undefined && entry.name !== null && str(entry.name) === undefined)
      problems.push('name: must be a non-blank string (or left out, for an automatic name)');
    else if (provider === 'claude' && !opts.positionalNames && str(entry.name) === undefined)
      problems.push("name: is required (an automatic name, claude-N, could be another login's)");
    const parsed = provider === 'claude' ? claudeEntry(entry, i, problems) : codexEntry(entry, problems);
    if (problems.length > 0 || !parsed) {
      errors.push(...problems.map((p) => `${where}.${p}`));
      return;
    }
    const nameProblem = checkName(parsed.name);
    if (nameProblem) {
      errors.push(`${where}.name: ${nameProblem}`);
      return;
    }
    if (accounts.some((a) => a.name === parsed.name)) {
      errors.push(`${where}.name: "${parsed.name}" appears twice`);
      return;
    }
    accounts.push(parsed);
  });
  return { accounts, errors };
}

export function checkName(name: string): string | undefined {
  if (name.length === 0 || name.length > 200) return 'must be 1 to 200 characters';
  if (name.replace(/[\s\p{Cf}]/gu, '') === '') return 'must have a visible character';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'must not contain control characters';
  return undefined;
}

/**
 * Longest token taken. Access tokens go in a header, and 16 KiB is Node's and many proxies' limit
 * for all of them: a longer one (a file pasted whole, say) fails every request it is used for.
 */
const MAX_TOKEN_LENGTH = 16_384;

function tooLong(prefix: string, tokens: Record<string, string | undefined>, problems: string[]): void {
  for (const [field, value] of Object.entries(tokens))
    if (value !== undefined && value.length > MAX_TOKEN_LENGTH)
      problems.push(`${prefix}${field}: must be at most ${MAX_TOKEN_LENGTH} characters (this one has ${value.length})`);
}

function claudeEntry(e: Obj, index: number, problems: string[]): AccountInput | undefined {
  const oauth = isJsonObject(e.claudeAiOauth) ? e.claudeAiOauth : e;
  const prefix = oauth === e ? '' : 'claudeAiOauth.';
  const accessToken = str(oauth.access_token) ?? str(oauth.accessToken);
  const refreshToken = str(oauth.refresh_token) ?? str(oauth.refreshToken);
  if (!refreshToken) problems.push(`${prefix}refresh_token: is required (the login's refresh token, sk-ant-ort01-...)`);
  if (!accessToken) problems.push(`${prefix}access_token: is required (the login's access token, sk-ant-oat01-...)`);
  const rawExpiry = oauth.expires_at ?? oauth.expiresAt;
  const expiresAt = parseExpiry(rawExpiry);
  if (rawExpiry !== undefined && rawExpiry !== null && expiresAt === undefined)
    problems.push(`${prefix}expires_at: must be epoch milliseconds or an ISO date`);
  tooLong(prefix, { access_token: accessToken, refresh_token: refreshToken }, problems);
  if (!accessToken || !refreshToken || expiresAt === undefined || problems.length > 0) return undefined;
  return {
    provider: 'claude',
    name: str(e.name) ?? `claude-${index + 1}`,
    credentials: { accessToken, refreshToken },
    expiresAt,
    externalAccountId: null,
    email: clipped(str(e.email), 320),
    planType: clipped(str(e.subscription_type) ?? str(oauth.subscriptionType), 64),
  };
}

function codexEntry(e: Obj, problems: string[]): AccountInput | undefined {
  const tokens = isJsonObject(e.tokens) ? e.tokens : e;
  const prefix = tokens === e ? '' : 'tokens.';
  const accessToken = str(tokens.access_token);
  const refreshToken = str(tokens.refresh_token);
  const idToken = str(tokens.id_token);
  if (typeof e.auth_mode === 'string' && /api.?key/i.test(e.auth_mode)) {
    problems.push(`auth_mode: "${String(e.auth_mode)}" is not a ChatGPT login (log in to Codex with ChatGPT, not an API key)`);
  }
  if (!refreshToken) problems.push(`${prefix}refresh_token: is required`);
  if (!accessToken) problems.push(`${prefix}access_token: is required`);
  const fromId = chatGptIdentity(idToken);
  const fromAccess = chatGptIdentity(accessToken);
  const accountId = str(tokens.account_id) ?? str(e.account_id) ?? fromId.accountId ?? fromAccess.accountId;
  if (accessToken && !accountId)
    problems.push(`${prefix}account_id: is required (not in the file and not in the tokens' https://api.openai.com/auth claim)`);
  if (accountId && accountId.length > 200) problems.push(`${prefix}account_id: must be at most 200 characters`);
  tooLong(prefix, { access_token: accessToken, refresh_token: refreshToken, id_token: idToken }, problems);
  if (problems.length > 0 || !accessToken || !refreshToken || !accountId) return undefined;
  const email = str(e.email) ?? fromId.email ?? fromAccess.email;
  const rawExpiry = e.expires_at ?? tokens.expires_at;
  return {
    provider: 'codex',
    name: str(e.name) ?? email ?? accountId,
    credentials: { accessToken, refreshToken, ...(idToken ? { idToken } : {}) },
    expiresAt: jwtExpiry(accessToken) ?? parseExpiry(rawExpiry) ?? null,
    externalAccountId: accountId,
    email: clipped(email, 320),
    planType: clipped(fromId.planType ?? fromAccess.planType, 64),
  };
}

/** Informational fields are cut to their column's size rather than refused. */
function clipped(v: string | undefined, max: number): string | null {
  return v === undefined ? null : v.slice(0, max);
}

/** Epoch ms (numbers below 10^12 are taken as seconds), an ISO date (UTC unless it has an offset), or null/absent → null. Undefined: unreadable. */
export function parseExpiry(v: unknown): number | null | undefined {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return storableTime(v < 1e12 ? v * 1000 : v);
  if (typeof v === 'string') {
    if (/^\d+$/.test(v.trim())) return parseExpiry(Number(v));
    // An ISO date only: Date.parse alone takes free text ("expires soon 5" was 2001-05-01).
    const ms = parseIsoDateUtc(v);
    return ms === undefined ? undefined : storableTime(ms);
  }
  return undefined;
}
