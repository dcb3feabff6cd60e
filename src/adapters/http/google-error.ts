/**
 * Google's API error body, `{"error": {"code", "message", "status", "details"}}`, as Gemini and
 * the Vertex AI front end (before a request reaches a partner model such as Claude) answer.
 */
export interface GoogleError {
  code?: number;
  message?: string;
  status?: string;
  details?: Array<{ '@type'?: string; reason?: string; retryDelay?: string; [k: string]: unknown }>;
}

/** The `error` of a Google error body, also when it comes wrapped in an array. */
export function parseGoogleError(text: string): GoogleError | undefined {
  try {
    let json = JSON.parse(text) as unknown;
    if (Array.isArray(json)) json = json[0];
    const e = (json as { error?: unknown } | null)?.error;
    return e && typeof e === 'object' ? e : undefined;
  } catch {
    return undefined;
  }
}

/** A protobuf duration as JSON writes it ("57.238747106s") in milliseconds, rounded up. */
export function durationMs(d: unknown): number | undefined {
  if (typeof d !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)s$/.exec(d.trim());
  return m ? Math.ceil(Number(m[1]) * 1000) : undefined;
}

/** How long a Google error's `google.rpc.RetryInfo` says to wait (ms), if it has one. */
export function googleRetryDelayMs(e: GoogleError | undefined): number | undefined {
  const info = (e?.details ?? []).find((d) => typeof d['@type'] === 'string' && d['@type'].endsWith('google.rpc.RetryInfo'));
  return durationMs(info?.retryDelay);
}

/**
 * The HTTP status a Google refusal counts as. A 400 `FAILED_PRECONDITION` is about the project's
 * or the region's state ("User location is not supported", "enable billing", "Project is not
 * allowed to use Publisher Model"), not the request: a 403, so that the next route is tried.
 */
export function googleStatus(status: number, e: GoogleError | undefined): number {
  return status === 400 && e?.status === 'FAILED_PRECONDITION' ? 403 : status;
}
