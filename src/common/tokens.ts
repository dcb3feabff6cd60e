import type { ChatMessage, ChatRequest } from './chat.types';

/**
 * Rough token counts for when an upstream reports none (or a stream was cut), and for what a
 * request may cost before it is sent (budgets reserve it): about four characters per token in
 * Latin script, two in other alphabets (Cyrillic, Greek, Arabic, Hebrew, Devanagari, ...), and
 * one per character of CJK and the scripts after it (tokenizers give a Chinese character about
 * one token; counted at four characters, a Chinese prompt was reserved at a quarter of its
 * cost), plus OpenAI's per-message overhead. Only ever used as an estimate and marked as such in
 * the request log.
 */
export function estimateTextTokens(text: string): number {
  return unitsToTokens(textUnits(text));
}

/**
 * Text as estimate units, a quarter of a token each: a Latin character is one, one of another
 * alphabet two, a CJK character four. Output is counted in these as it is delivered (streams
 * add them up chunk by chunk), and turned into tokens by unitsToTokens.
 */
export function textUnits(text: string): number {
  if (!BEYOND_LATIN1.test(text)) return text.length;
  let units = 0;
  for (let i = 0; i < text.length; i++) units += charUnits(text.charCodeAt(i));
  return units;
}

/** One UTF-16 code unit's estimate units (see textUnits). */
export function charUnits(code: number): number {
  return code >= 0x2e80 ? 4 : code >= 0x100 ? 2 : 1;
}

/** Estimate units (textUnits) as tokens. */
export function unitsToTokens(units: number): number {
  return Math.ceil(units / 4);
}

const BEYOND_LATIN1 = /[\u0100-\uffff]/;

export function estimateMessageTokens(messages: readonly ChatMessage[]): number {
  let total = 3; // every reply is primed with <|start|>assistant<|message|>
  for (const m of messages) {
    total += 4;
    total += estimateTextTokens(contentText(m.content));
    if (Array.isArray(m.content))
      for (const part of m.content as Array<{ type?: unknown; image_url?: { url?: unknown } } | null>)
        if (part?.type === 'image_url') total += estimateImageTokens(part.image_url?.url);
    if (m.name) total += estimateTextTokens(m.name);
    if (m.tool_calls) total += estimateTextTokens(JSON.stringify(m.tool_calls));
  }
  return total;
}

export function estimatePromptTokens(req: Pick<ChatRequest, 'messages' | 'tools'>): number {
  return estimateMessageTokens(req.messages) + (req.tools ? estimateTextTokens(JSON.stringify(req.tools)) : 0);
}

/**
 * An assistant message's content as a translating adapter sends it back: OpenAI's refusal (a
 * `refusal` part, or the message's `refusal` when it has no text) as the text it was. Claude
 * refused a refusal part (400) and Gemini dropped it; the model said it, and the next turn reads
 * on from it.
 */
export function assistantContent(m: ChatMessage): ChatMessage['content'] {
  const refusal = typeof m.refusal === 'string' && m.refusal !== '' ? m.refusal : undefined;
  const content = m.content;
  if (Array.isArray(content)) {
    const parts = content.map((p) => {
      const said = p?.type === 'refusal' ? p.refusal : undefined;
      return typeof said === 'string' ? { type: 'text' as const, text: said } : p;
    });
    return refusal !== undefined && contentText(parts) === '' ? [...parts, { type: 'text', text: refusal }] : parts;
  }
  return refusal !== undefined && (content === null || content === undefined || content === '') ? refusal : content;
}

/** The text of a message's content, whether a string or a list of parts. */
export function contentText(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  let out = '';
  for (const part of content) if (part && typeof (part as { text?: unknown }).text === 'string') out += (part as { text: string }).text;
  return out;
}

/**
 * What a model generated in a message or a stream delta, in estimate units (textUnits): its
 * text (a string or a list of parts), a refusal, an audio answer's transcript, its reasoning and
 * its tool calls' names and arguments.
 * What an estimate of completion tokens is made from when an upstream reports no usage, for
 * JSON answers and streams alike.
 */
export function outputUnits(m: OutputPart | null | undefined): number {
  if (!m) return 0;
  let units = textUnits(contentText(m.content as ChatMessage['content']));
  if (typeof m.refusal === 'string') units += textUnits(m.refusal);
  const transcript = (m.audio as { transcript?: unknown } | null | undefined)?.transcript;
  if (typeof transcript === 'string') units += textUnits(transcript);
  // The same text may come under both names (withOpenRouterReasoning): counted once.
  if (typeof m.reasoning_content === 'string') units += textUnits(m.reasoning_content);
  else if (typeof m.reasoning === 'string') units += textUnits(m.reasoning);
  if (Array.isArray(m.tool_calls))
    for (const t of m.tool_calls as Array<{
      function?: { name?: unknown; arguments?: unknown };
      custom?: { name?: unknown; input?: unknown };
    } | null>) {
      const c = t?.custom;
      if (c) {
        if (typeof c.name === 'string') units += textUnits(c.name);
        if (typeof c.input === 'string') units += textUnits(c.input);
      }
      const f = t?.function;
      if (!f) continue;
      if (typeof f.name === 'string') units += textUnits(f.name);
      if (typeof f.arguments === 'string') units += textUnits(f.arguments);
    }
  return units;
}

/**
 * Whether a message or a delta carries generated media, which counts no text: an image model's
 * images (OpenRouter's `images`), a spoken answer's audio (`audio.data`).
 */
export function carriesMedia(m: object): boolean {
  const { images, audio } = m as { images?: unknown; audio?: unknown };
  if (Array.isArray(images) && images.length > 0) return true;
  const data = (audio as { data?: unknown } | null | undefined)?.data;
  return typeof data === 'string' && data.length > 0;
}

interface OutputPart {
  content?: unknown;
  refusal?: unknown;
  audio?: unknown;
  reasoning_content?: unknown;
  reasoning?: unknown;
  tool_calls?: unknown;
}

/** Images in a chat request's messages (billed at `pricing.image` each). */
export function countImages(req: Pick<ChatRequest, 'messages'>): number {
  let n = 0;
  for (const m of req.messages) {
    if (!Array.isArray(m.content)) continue;
    for (const part of m.content) if (part && typeof part === 'object' && (part as { type?: unknown }).type === 'image_url') n++;
  }
  return n;
}

/** An image whose size cannot be read (a remote URL, an unknown format): about the most one costs. */
const UNKNOWN_IMAGE_TOKENS = 1600;

/**
 * Tokens an image costs, estimated as Anthropic documents it: the image scaled down to at most
 * 1568 px on its long edge and about 1.15 megapixels, then width x height / 750. OpenAI's tile
 * count comes out within a factor of about two. The size is read from a data URL's first bytes
 * (PNG, GIF, JPEG, WebP); anything else counts as a large image.
 */
export function estimateImageTokens(url: unknown): number {
  const size = typeof url === 'string' ? dataUrlImageSize(url) : undefined;
  // A header claiming no pixels is no size at all (else a forged one would make an image free).
  if (!size || !(size.width > 0) || !(size.height > 0)) return UNKNOWN_IMAGE_TOKENS;
  let { width: w, height: h } = size;
  const edge = Math.max(w, h);
  if (edge > 1568) [w, h] = [(w * 1568) / edge, (h * 1568) / edge];
  if (w * h > 1_150_000) {
    const k = Math.sqrt(1_150_000 / (w * h));
    [w, h] = [w * k, h * k];
  }
  return Math.max(1, Math.ceil((w * h) / 750));
}

/** Width and height from the header of a base64 data URL's image, when its format is known. */
function dataUrlImageSize(url: string): { width: number; height: number } | undefined {
  if (!url.startsWith('data:')) return undefined;
  const comma = url.indexOf(',');
  if (comma < 0 || !url.slice(0, comma).endsWith(';base64')) return undefined;
  // JPEG's size marker may follow a long EXIF block: read up to 48 KB of the image.
  const b = Buffer.from(url.slice(comma + 1, comma + 1 + 65_536), 'base64');
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47) return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  if (b.length >= 10 && b.toString('latin1', 0, 4) === 'GIF8') return { width: b.readUInt16LE(6), height: b.readUInt16LE(8) };
  if (b.length >= 30 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return webpSize(b);
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) return jpegSize(b);
  return undefined;
}

function webpSize(b: Buffer): { width: number; height: number } | undefined {
  const chunk = b.toString('latin1', 12, 16);
  if (chunk === 'VP8X') return { width: 1 + b.readUIntLE(24, 3), height: 1 + b.readUIntLE(27, 3) };
  if (chunk === 'VP8 ') return { width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff };
  if (chunk === 'VP8L') {
    const bits = b.readUInt32LE(21);
    return { width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff) };
  }
  return undefined;
}

/** The frame size in a JPEG's first start-of-frame marker (SOF0-SOF15 but DHT, JPG and DAC). */
function jpegSize(b: Buffer): { width: number; height: number } | undefined {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return undefined;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    const length = b.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc)
      return { width: b.readUInt16BE(i + 7), height: b.readUInt16BE(i + 5) };
    i += 2 + length;
  }
  return undefined;
}
