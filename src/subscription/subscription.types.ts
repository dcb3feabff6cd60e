/** The OAuth subscription logins the gateway can pool. One pool per provider, shared by every surface. */
export const SUBSCRIPTION_PROVIDERS = ['claude', 'codex'] as const;
export type SubscriptionProvider = (typeof SUBSCRIPTION_PROVIDERS)[number];

export function isSubscriptionProvider(v: unknown): v is SubscriptionProvider {
  return typeof v === 'string' && (SUBSCRIPTION_PROVIDERS as readonly string[]).includes(v);
}

/**
 * What an account's tokens are. Encrypted as a whole into one column; never logged, never
 * returned by the admin API.
 */
export interface AccountCredentials {
  accessToken: string;
  refreshToken: string;
  /** Codex: the OpenID token of the login (kept because Codex keeps it; not sent upstream). */
  idToken?: string;
}
