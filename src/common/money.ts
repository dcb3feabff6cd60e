/**
 * Exact money arithmetic. Prices and costs are BigInt counts of pico-dollars (1e-12 USD), so that
 * summing millions of requests never drifts the way binary floats do. A price of "0.15" USD per
 * million tokens is 150,000 pico-dollars per token.
 */

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;

/** Parses a non-negative decimal (string or number) into an integer scaled by 10^scale, rounding half up. */
export function parseScaled(value: string | number, scale: number): bigint {
  let text = typeof value === 'number' ? numberToPlain(value) : value.trim();
  if (text.startsWith('+')) text = text.slice(1);
  const m = DECIMAL.exec(text);
  if (!m) throw new Error(`"${value}" is not a non-negative decimal number`);
  const frac = m[2] ?? '';
  const kept = frac.slice(0, scale).padEnd(scale, '0');
  let out = BigInt(m[1] + kept);
  if (frac.length > scale && frac.charCodeAt(scale) >= 53 /* '5' */) out += 1n;
  return out;
}

/** Whether `value` has non-zero digits beyond `scale` decimals, which `parseScaled` rounds away. */
export function finerThan(value: string | number, scale: number): boolean {
  const text = typeof value === 'number' ? numberToPlain(value) : value.trim();
  const frac = DECIMAL.exec(text.startsWith('+') ? text.slice(1) : text)?.[2] ?? '';
  return /[1-9]/.test(frac.slice(scale));
}

function numberToPlain(n: number): string {
  if (!Number.isFinite(n) || n < 0) return String(n);
  const s = String(n);
  return s.includes('e') ? n.toFixed(20).replace(/0+$/, '').replace(/\.$/, '') : s;
}

/** Formats an integer scaled by 10^scale as a plain decimal string without trailing zeros. */
export function formatScaled(value: bigint, scale: number): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString().padStart(scale + 1, '0');
  const int = digits.slice(0, digits.length - scale);
  const frac = digits.slice(digits.length - scale).replace(/0+$/, '');
  return `${negative ? '-' : ''}${int}${frac ? `.${frac}` : ''}`;
}

export const PICO_SCALE = 12;

/** Decimals a price per million tokens keeps: one pico-dollar per token. */
export const PER_MILLION_SCALE = 6;

/** USD per million tokens → pico-dollars per token. */
export function perMillionToPicoPerToken(value: string | number): bigint {
  // pico per token = USD per million * 1e12 / 1e6 = value * 1e6
  return parseScaled(value, PER_MILLION_SCALE);
}

/** USD per unit (request, image) → pico-dollars per unit. */
export function usdToPico(value: string | number): bigint {
  return parseScaled(value, PICO_SCALE);
}

/** Pico-dollars → USD as a decimal string ("0.000015"). */
export function picoToUsd(pico: bigint): string {
  return formatScaled(pico, PICO_SCALE);
}

/** A configured price: the decimal as written (normalised) and its pico-dollar value per unit. */
export interface Price {
  /** USD per million tokens (token prices) or USD per unit (request, image), normalised. */
  readonly text: string;
  /** Pico-dollars per token (token prices) or per unit. */
  readonly pico: bigint;
}

export interface Pricing {
  prompt: Price;
  completion: Price;
  request: Price;
  image: Price;
  input_cache_read?: Price;
  input_cache_write?: Price;
  /** Anthropic's one-hour cache writes; unset: see `costPico`. */
  input_cache_write_1h?: Price;
  internal_reasoning?: Price;
  /**
   * Per web search the upstream ran for the request (Claude's server tool reports them in
   * `usage.server_tool_use.web_search_requests`); unset, searches cost nothing here.
   */
  web_search?: Price;
}

export const TOKEN_PRICE_KEYS = [
  'prompt',
  'completion',
  'input_cache_read',
  'input_cache_write',
  'input_cache_write_1h',
  'internal_reasoning',
] as const;
export const UNIT_PRICE_KEYS = ['request', 'image'] as const;

export function tokenPrice(value: string | number): Price {
  const pico = perMillionToPicoPerToken(value);
  return { text: formatScaled(pico, PER_MILLION_SCALE), pico };
}

export function unitPrice(value: string | number): Price {
  const pico = usdToPico(value);
  return { text: picoToUsd(pico), pico };
}

export const FREE: Price = { text: '0', pico: 0n };

/** Token counts of one request, in OpenAI's sense: prompt includes cached and cache-write tokens. */
export interface TokenCounts {
  prompt: number;
  completion: number;
  cachedRead: number;
  cacheWrite: number;
  /** Of `cacheWrite`, the tokens written to a one-hour cache (Anthropic's `ttl: "1h"`). */
  cacheWrite1h?: number;
  reasoning: number;
  /** Web searches the upstream ran (a server tool), billed at `web_search` each. */
  webSearches?: number;
}

/**
 * The cost of one request in pico-dollars. Cached reads and cache writes are billed at their own
 * price where the model sets one, else at the prompt price; reasoning tokens are part of the
 * completion and billed at `internal_reasoning` only where it is set. Images in the prompt are
 * billed at `image` each. One-hour cache writes cost `input_cache_write_1h` where it is set;
 * else, where the model prices cache writes, twice the prompt price (Anthropic bills a five-minute
 * write at 1.25 times the input price and a one-hour write at twice it); else the prompt price.
 */
export function costPico(tokens: TokenCounts, pricing: Pricing, requests = 1, images = 0): bigint {
  const cachedRead = clamp(tokens.cachedRead, tokens.prompt);
  const cacheWrite = clamp(tokens.cacheWrite, tokens.prompt - cachedRead);
  const cacheWrite1h = clamp(tokens.cacheWrite1h ?? 0, cacheWrite);
  const plainPrompt = tokens.prompt - cachedRead - cacheWrite;
  const reasoning = pricing.internal_reasoning ? clamp(tokens.reasoning, tokens.completion) : 0;
  const plainCompletion = tokens.completion - reasoning;
  return (
    BigInt(plainPrompt) * pricing.prompt.pico +
    BigInt(cachedRead) * (pricing.input_cache_read ?? pricing.prompt).pico +
    BigInt(cacheWrite - cacheWrite1h) * (pricing.input_cache_write ?? pricing.prompt).pico +
    BigInt(cacheWrite1h) * oneHourWritePico(pricing) +
    BigInt(plainCompletion) * pricing.completion.pico +
    BigInt(reasoning) * (pricing.internal_reasoning ?? pricing.completion).pico +
    BigInt(requests) * pricing.request.pico +
    BigInt(images) * pricing.image.pico +
    BigInt(clamp(tokens.webSearches ?? 0, 1_000_000)) * (pricing.web_search ?? FREE).pico
  );
}

function oneHourWritePico(pricing: Pricing): bigint {
  if (pricing.input_cache_write_1h) return pricing.input_cache_write_1h.pico;
  return pricing.input_cache_write ? 2n * pricing.prompt.pico : pricing.prompt.pico;
}

function clamp(n: number, max: number): number {
  return Math.max(0, Math.min(Math.trunc(n) || 0, Math.max(0, max)));
}

/** The per-token price as OpenRouter's /v1/models shows it: USD per token, as a string. */
export function perTokenUsd(price: Price): string {
  return picoToUsd(price.pico);
}
