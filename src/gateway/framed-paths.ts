/**
 * The model endpoints: their handlers run inside `GatewayCalls.handle`, which answers and logs
 * every request (one api_logs row), including a body the reader refused. The body reader needs
 * the list before routing, so it is kept here, next to the controllers that serve these paths
 * (an e2e spec posts a refused body to each and checks for its row).
 */
const FRAMED_PATHS: ReadonlySet<string> = new Set([
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/v1/messages',
  '/v1/messages/count_tokens',
  '/anthropic/v1/messages',
  '/anthropic/v1/messages/count_tokens',
]);

/**
 * Whether `path` (as Express gives it) is a model endpoint. Express routes ignore case and a
 * trailing slash by default, so this does too.
 */
export function isFramedPath(path: string): boolean {
  const p = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return FRAMED_PATHS.has(p) || FRAMED_PATHS.has(p.toLowerCase());
}
