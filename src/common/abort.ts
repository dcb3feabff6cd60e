/**
 * Resolves like `promise`, or rejects as soon as `signal` aborts (the promise goes on; its later
 * outcome is ignored, never an unhandled rejection). The rejection is `reason()`, by default the
 * signal's own reason. Without a signal, the promise itself.
 */
export function raceAbort<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  reason: () => unknown = () => signal?.reason,
): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(asError(reason()));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(asError(reason()));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        // As it came: an error of another realm (undici's under jest) is no `instanceof Error`,
        // and wrapping it would lose its `code`.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(e);
      },
    );
  });
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e ?? 'aborted'));
}
