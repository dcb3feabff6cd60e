/** OpenAI's `POST /v1/embeddings`, the shape clients send and receive. */

export type EmbeddingInput = string | string[] | number[] | number[][];

export interface EmbeddingsRequest {
  model: string;
  input: EmbeddingInput;
  encoding_format?: 'float' | 'base64';
  dimensions?: number;
  user?: string;
  [extra: string]: unknown;
}

export interface EmbeddingItem {
  object: 'embedding';
  index: number;
  /** Floats, or (when the client asked for `base64`) the little-endian float32 bytes in base64. */
  embedding: number[] | string;
}

export interface EmbeddingsUsage {
  prompt_tokens: number;
  total_tokens: number;
  /** Provider-reported cost in USD (OpenRouter). */
  cost?: number;
  [extra: string]: unknown;
}

export interface EmbeddingsResponse {
  object: 'list';
  data: EmbeddingItem[];
  model: string;
  /** Absent when the provider reports none (Gemini); the gateway then estimates it. */
  usage?: EmbeddingsUsage;
  [extra: string]: unknown;
}

/** Floats as OpenAI's base64 encoding: little-endian float32 bytes. */
export function floatsToBase64(values: readonly number[]): string {
  const buf = Buffer.allocUnsafe(values.length * 4);
  for (let i = 0; i < values.length; i++) buf.writeFloatLE(values[i], i * 4);
  return buf.toString('base64');
}

export function base64ToFloats(text: string): number[] {
  const buf = Buffer.from(text, 'base64');
  const out = new Array<number>(Math.floor(buf.length / 4));
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

/** Each item's embedding in the encoding the client asked for, whatever the upstream sent. */
export function encodeEmbeddings(res: EmbeddingsResponse, format: 'float' | 'base64'): EmbeddingsResponse {
  for (const item of res.data) {
    const e = item.embedding;
    if (format === 'base64' && Array.isArray(e)) item.embedding = floatsToBase64(e);
    else if (format === 'float' && typeof e === 'string') item.embedding = base64ToFloats(e);
  }
  return res;
}

/**
 * A character outside base64's alphabets (standard and URL-safe; Buffer reads both, padding
 * optional). Searched for rather than the whole text matched against `^[...]+={0,2}$`: on a
 * vector of a million dimensions that pattern backtracked over every character of a text with a
 * bad one at its end and, in some runs, overflowed the stack ("Maximum call stack size exceeded").
 */
const NOT_BASE64 = /[^A-Za-z0-9+/_-]/;

/** Whether `text` is base64 of one or more whole float32 values. */
function isFloat32Base64(text: string): boolean {
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const chars = text.length - pad;
  if (chars === 0 || NOT_BASE64.test(pad > 0 ? text.slice(0, chars) : text)) return false;
  if ((pad > 0 && text.length % 4 !== 0) || chars % 4 === 1) return false;
  const bytes = Math.floor((chars * 3) / 4);
  return bytes > 0 && bytes % 4 === 0;
}

/**
 * What makes an upstream's embeddings unusable, if anything: not one vector per input, an item
 * that is not an object holding a list of numbers (or OpenAI's base64 of float32 values), or an
 * `index` that is not one of the inputs' or repeats one. Undefined when the answer is sound.
 */
export function embeddingsProblem(res: { data?: unknown }, inputs: number): string | undefined {
  const data = res.data;
  if (!Array.isArray(data)) return 'answered without embeddings';
  if (data.length !== inputs)
    return `answered ${data.length} embedding${data.length === 1 ? '' : 's'} for ${inputs} input${inputs === 1 ? '' : 's'}`;
  const seen = new Uint8Array(inputs);
  let indexed = 0;
  for (let i = 0; i < data.length; i++) {
    const item: unknown = data[i];
    const e = typeof item === 'object' && item !== null ? (item as { embedding?: unknown }).embedding : undefined;
    // The first value stands for the rest: checking every dimension of every vector costs more than it finds.
    const sound = typeof e === 'string' ? isFloat32Base64(e) : Array.isArray(e) && typeof e[0] === 'number';
    if (!sound) return `answered an embedding (data[${i}]) that is not a list of numbers`;
    const index = (item as { index?: unknown }).index;
    if (index === undefined) continue; // positional, as the list's order gives it
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= inputs || seen[index])
      return `answered data[${i}] with index ${JSON.stringify(index)}, which is not one of the ${inputs} input${inputs === 1 ? '' : 's'} or repeats one`;
    seen[index] = 1;
    indexed++;
  }
  // Some placed by index and some by position: which input each of the latter is for is a guess.
  if (indexed > 0 && indexed < data.length) return 'answered some embeddings with an index and some without';
  return undefined;
}

/** The inputs as texts (token-id inputs have no text: they count by length). */
export function embeddingInputs(input: EmbeddingInput): Array<string | number[]> {
  if (typeof input === 'string') return [input];
  if (input.length > 0 && typeof input[0] === 'number') return [input as number[]];
  return input as Array<string | number[]>;
}
