import { randomBytes } from 'node:crypto';
import type { ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChunkDelta, ContentPart, ToolCall, Usage } from '../../common/chat.types';
import type { EmbeddingsRequest, EmbeddingsResponse } from '../../common/embedding.types';
import { UpstreamError } from '../../common/errors';
import { assistantContent, contentText } from '../../common/tokens';
import { googleRetryDelayMs, googleStatus, parseGoogleError } from '../http/google-error';
import { parseEmbeddedJson } from '../../common/json-body';
import { ownValue } from '../../common/json-object';
import type { RouteDef } from '../../config/registry.types';
import { base64DataUrl, checkEffort, providerHttpError, refuseUntranslatableTools, unsupported } from '../http/upstream-call';
import type {
  GeminiBatchEmbedRequest,
  GeminiBatchEmbedResponse,
  GeminiCandidate,
  GeminiContent,
  GeminiGenerationConfig,
  GeminiPart,
  GeminiRequest,
  GeminiResponse,
  GeminiUsageMetadata,
} from './gemini.types';

/**
 * OpenAI chat ⇄ Gemini `generateContent`, as pure functions: the canonical request as a Gemini
 * body, answers (whole or streamed) as canonical chat, usage, finish reasons, errors and
 * embeddings.
 */

/**
 * Put on a replayed function call that has no thought signature (a history not produced by
 * Gemini, or a client that dropped `extra_content`): Google's documented way past the check
 * Gemini 3 makes on function-call turns.
 */
export const SKIP_THOUGHT_SIGNATURE = 'skip_thought_signature_validator';

/** `reasoning_effort` as a thinking budget (the numbers Gemini's OpenAI-compatible endpoint uses). */
export const THINKING_BUDGETS: Readonly<Record<string, number>> = {
  none: 0,
  minimal: 512,
  low: 1024,
  medium: 8192,
  high: 24576,
  xhigh: 24576,
  // The most every thinking Gemini takes (2.5 Flash's ceiling; Pro's is 32,768).
  max: 24576,
};

/** Ids the gateway made up for function calls Gemini returned without one (it often does). */
const SYNTHETIC_ID = /^call_[A-Za-z0-9]{24}$/;

export function syntheticToolCallId(): string {
  return `call_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x').slice(0, 24)}`;
}

/** `gemini-2.5-flash` → `models/gemini-2.5-flash`; `tunedModels/x` and `models/x` stay. */
export function geminiModelPath(model: string): string {
  return model.includes('/') ? model : `models/${model}`;
}

const MIME_BY_EXT: Readonly<Record<string, string>> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  webp: 'image/webp',
  gif: 'image/gif',
  heic: 'image/heic',
  heif: 'image/heif',
  pdf: 'application/pdf',
  txt: 'text/plain',
  mp3: 'audio/mp3',
  wav: 'audio/wav',
  aac: 'audio/aac',
  ogg: 'audio/ogg',
  flac: 'audio/flac',
  aiff: 'audio/aiff',
  mp4: 'video/mp4',
  mpeg: 'video/mpeg',
  mpg: 'video/mpg',
  mov: 'video/mov',
  avi: 'video/avi',
  webm: 'video/webm',
  wmv: 'video/wmv',
  '3gp': 'video/3gpp',
};

/** YouTube videos, which Gemini takes by URL without a media type. */
const YOUTUBE = /^https?:\/\/(?:www\.|m\.)?(?:youtube\.com|youtu\.be)\//i;

function mediaPart(url: string, at: string): GeminiPart {
  const d = base64DataUrl(url, at);
  if (d) return { inlineData: { mimeType: d.mediaType, data: d.data } };
  // Files API URIs, gs:// and other URLs Gemini fetches itself; it needs the media type.
  if (YOUTUBE.test(url)) return { fileData: { fileUri: url } };
  const ext = /\.([a-z0-9]+)(?:[?#].*)?$/i.exec(url)?.[1]?.toLowerCase();
  // An image_url without a known extension is taken for an image.
  return { fileData: { fileUri: url, mimeType: (ext && ownValue(MIME_BY_EXT, ext)) || 'image/jpeg' } };
}

/**
 * A message's parts (`withText` false: its images and files only). Empty text is left out: Gemini refuses a part without data (`text: ""`
 * included: "required oneof field 'data' must have one initialized field"), which OpenAI takes.
 */
function userParts(content: ChatMessage['content'], at: string, withText = true): GeminiPart[] {
  if (content === null || content === undefined) return [];
  if (typeof content === 'string') return content === '' || !withText ? [] : [{ text: content }];
  return content.flatMap((part: ContentPart, j): GeminiPart[] => {
    switch (part.type) {
      case 'text': {
        const text = String((part as { text: unknown }).text);
        return text === '' || !withText ? [] : [{ text }];
      }
      case 'image_url': {
        const iu = (part as { image_url: string | { url: string } }).image_url;
        return [mediaPart(typeof iu === 'string' ? iu : iu.url, `${at}.content[${j}]`)];
      }
      case 'file': {
        const f = (part as { file?: { file_data?: string; file_id?: string } }).file;
        const url = f?.file_data ?? f?.file_id;
        if (!url)
          throw unsupported(
            `${at}.content[${j}]: a file needs file_data (a base64 data: URL) or file_id (a Gemini Files API URI)`,
            `${at}.content[${j}].file`,
          );
        return [mediaPart(url, `${at}.content[${j}]`)];
      }
      default:
        throw unsupported(`${at}.content[${j}]: content of type "${part.type}" cannot be sent to Gemini`, `${at}.content[${j}].type`);
    }
  });
}

function parseArgs(args: string, at: string): Record<string, unknown> {
  if (args.trim() === '') return {};
  try {
    const v = parseEmbeddedJson(args);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { value: v };
  } catch (err) {
    throw unsupported(`${at}: function.arguments ${err instanceof RangeError ? err.message : 'must be JSON'}`, at);
  }
}

function signatureOf(call: ToolCall): string | undefined {
  const sig = (call as { extra_content?: { google?: { thought_signature?: unknown } } }).extra_content?.google?.thought_signature;
  return typeof sig === 'string' && sig ? sig : undefined;
}

function modelParts(m: ChatMessage, at: string): GeminiPart[] {
  const parts: GeminiPart[] = [];
  const text = contentText(assistantContent(m));
  if (text) parts.push({ text });
  // Images the model made, sent back as the gateway returned them (OpenRouter's `images`) or as
  // image parts: an image model edits the image of an earlier turn only if it sees it again.
  // Inline ones only: a URL in another provider's history may be private or expired by now,
  // and Gemini would fail the whole request fetching it, where the turn was sent as text before.
  const inline = (url: unknown): void => {
    if (typeof url !== 'string' || !/^data:/i.test(url)) return;
    let d: ReturnType<typeof base64DataUrl>;
    try {
      d = base64DataUrl(url, at);
    } catch {
      return; // not base64: left out, as before
    }
    if (d) parts.push({ inlineData: { mimeType: d.mediaType, data: d.data } });
  };
  if (Array.isArray(m.content))
    for (const p of m.content) {
      if (p.type !== 'image_url') continue;
      const iu = (p as { image_url: string | { url: string } }).image_url;
      inline(typeof iu === 'string' ? iu : iu?.url);
    }
  const images = (m as { images?: unknown }).images;
  if (Array.isArray(images))
    for (const img of images as Array<{ image_url?: string | { url?: unknown } } | null>) {
      const iu = img?.image_url;
      inline(typeof iu === 'string' ? iu : iu?.url);
    }
  (m.tool_calls ?? []).forEach((t, j) => {
    const part: GeminiPart = { functionCall: { name: t.function.name, args: parseArgs(t.function.arguments, `${at}.tool_calls[${j}]`) } };
    if (!SYNTHETIC_ID.test(t.id)) part.functionCall!.id = t.id;
    const sig = signatureOf(t) ?? (j === 0 ? SKIP_THOUGHT_SIGNATURE : undefined);
    if (sig) part.thoughtSignature = sig;
    parts.push(part);
  });
  return parts;
}

function toolResponse(m: ChatMessage, calls: ReadonlyMap<string, string>, at: string): GeminiPart {
  const id = String(m.tool_call_id);
  const name = calls.get(id) ?? (typeof m.name === 'string' ? m.name : undefined);
  if (!name) throw unsupported(`${at}.tool_call_id "${id}" matches no tool call of an earlier assistant message`, `${at}.tool_call_id`);
  const text = contentText(m.content);
  let output: unknown = text;
  try {
    output = parseEmbeddedJson(text);
  } catch {
    // plain text output (or JSON nested too deep to send as such)
  }
  const part: GeminiPart = { functionResponse: { name, response: { output } } };
  if (!SYNTHETIC_ID.test(id)) part.functionResponse!.id = id;
  return part;
}

/**
 * The images and files of a tool result (a screenshot, a page as PDF), which a functionResponse
 * cannot carry on every model (its `parts` are Gemini 3's): sent as parts of the same user turn,
 * after the turn's function responses, where every Gemini model reads them.
 */
function toolMedia(m: ChatMessage, at: string): GeminiPart[] {
  return Array.isArray(m.content) ? userParts(m.content, at, false) : [];
}

function push(contents: GeminiContent[], role: 'user' | 'model', parts: GeminiPart[]): void {
  if (parts.length === 0) return;
  const last = contents[contents.length - 1];
  if (last && last.role === role) last.parts.push(...parts);
  else contents.push({ role, parts });
}

/**
 * What a Gemini model takes for thinking, by its name: Gemini 3 and later take levels (Pro low
 * and high, Flash also minimal and medium) and cannot stop thinking; 2.5 takes a budget in a
 * range of its own (Pro cannot stop either). Sent 0, or an effort for the wrong kind, each
 * answered 400 INVALID_ARGUMENT. Unknown names (a tuned model, an alias) get the budget as asked.
 */
function thinkingOf(model: string): { levels?: readonly string[]; min?: number; max?: number; canStop: boolean } {
  const m = /gemini-(\d+)(?:\.(\d+))?-(pro|flash-lite|flash)/.exec(model.toLowerCase());
  if (!m) return { canStop: true };
  const [, major, minor, kind] = m;
  if (Number(major) >= 3) return { levels: kind === 'pro' ? ['low', 'high'] : ['minimal', 'low', 'medium', 'high'], canStop: false };
  // 2.5's ranges; 2.0 and older: the budget as asked.
  if (major !== '2' || minor !== '5') return { canStop: true };
  if (kind === 'pro') return { min: 128, max: 32_768, canStop: false };
  return { min: kind === 'flash-lite' ? 512 : 1, max: 24_576, canStop: true };
}

/** An effort as the nearest level a Gemini 3 model takes (none: its least thinking, which it cannot turn off). */
function levelFor(effort: string, levels: readonly string[]): string {
  const wanted =
    effort === 'none' || effort === 'minimal'
      ? ['minimal', 'low']
      : effort === 'medium'
        ? ['medium', 'high']
        : effort === 'low'
          ? ['low']
          : ['high'];
  return wanted.find((l) => levels.includes(l)) ?? levels[levels.length - 1];
}

function thinkingConfig(req: ChatRequest, model: string): GeminiGenerationConfig['thinkingConfig'] {
  const reasoning = req.reasoning as { effort?: string; max_tokens?: number; exclude?: boolean; enabled?: boolean } | undefined;
  let budget: number | undefined;
  let effort: string | undefined;
  if (reasoning && typeof reasoning === 'object') {
    if (typeof reasoning.max_tokens === 'number') budget = reasoning.max_tokens;
    else if (reasoning.effort) {
      checkEffort(reasoning.effort, 'reasoning.effort');
      effort = reasoning.effort;
    } else if (reasoning.enabled === true) effort = 'medium';
  } else if (typeof req.reasoning_effort === 'string') {
    checkEffort(req.reasoning_effort, 'reasoning_effort');
    effort = req.reasoning_effort;
  }
  if (budget === undefined && effort === undefined) return undefined;
  const kind = thinkingOf(model);
  const show = reasoning?.exclude !== true;
  // Gemini 3 and later: a level (a budget still works there, 0 excepted).
  if (kind.levels && (effort !== undefined || budget === 0))
    return { thinkingLevel: levelFor(effort ?? 'none', kind.levels), includeThoughts: show && effort !== 'none' && budget !== 0 };
  budget ??= ownValue(THINKING_BUDGETS, effort!)!;
  // Within the model's range; -1 (dynamic) as it is; 0 only where thinking can stop.
  if (budget !== -1 && kind.min !== undefined && kind.max !== undefined && (budget !== 0 || !kind.canStop))
    budget = Math.min(kind.max, Math.max(kind.min, budget));
  return { thinkingBudget: budget, includeThoughts: budget !== 0 && show && effort !== 'none' };
}

/**
 * The canonical request as a `generateContent` body: system and developer messages →
 * `systemInstruction`; user and assistant turns → `user` / `model` contents (consecutive ones
 * merged); images and files → `inlineData` (data: URLs) or `fileData`; tool calls →
 * `functionCall` parts (with their thought signatures) and tool messages → `functionResponse`
 * parts named after the call they answer; tools, `tool_choice`, sampling, `stop`, `n`, JSON mode
 * and response schema, logprobs and reasoning effort → their Gemini fields.
 */
export function toGeminiRequest(req: ChatRequest, model = req.model): GeminiRequest {
  refuseUntranslatableTools(req, 'Gemini');
  const contents: GeminiContent[] = [];
  const system: GeminiPart[] = [];
  const calls = new Map<string, string>();
  /** The images and files of the tool results just answered (toolMedia), for after their function responses. */
  let media: GeminiPart[] = [];
  req.messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (media.length > 0 && m.role !== 'tool' && m.role !== 'function') {
      push(contents, 'user', media);
      media = [];
    }
    switch (m.role) {
      case 'system':
      case 'developer': {
        // Gemini's system instruction is text only: anything else would be dropped unseen.
        const parts = userParts(m.content, at);
        if (parts.some((p) => p.text === undefined))
          throw unsupported(
            `${at}: Gemini takes text only in system instructions; send images and files in a user message`,
            `${at}.content`,
          );
        system.push(...parts);
        return;
      }
      case 'user':
        push(contents, 'user', userParts(m.content, at));
        return;
      case 'assistant':
        for (const t of m.tool_calls ?? []) calls.set(t.id, t.function.name);
        push(contents, 'model', modelParts(m, at));
        return;
      case 'tool':
      case 'function':
        push(contents, 'user', [toolResponse(m, calls, at)]);
        media.push(...toolMedia(m, at));
        return;
    }
  });
  push(contents, 'user', media);

  // Nothing left to send (every message empty, or a system instruction alone): Gemini refuses
  // a request without contents; the model's next route may take it.
  if (contents.length === 0)
    throw unsupported('messages: Gemini needs a user or assistant message with content, and every one here is empty', 'messages');
  const body: GeminiRequest = { contents };
  if (system.length > 0) body.systemInstruction = { parts: system };
  if (req.tools?.length) {
    body.tools = [
      {
        functionDeclarations: req.tools.map((t) => ({
          name: t.function.name,
          ...(t.function.description ? { description: t.function.description } : {}),
          ...(t.function.parameters ? { parametersJsonSchema: t.function.parameters } : {}),
        })),
      },
    ];
  }
  const tc = req.tool_choice;
  if (req.tools?.length && tc) {
    if (tc === 'auto') body.toolConfig = { functionCallingConfig: { mode: 'AUTO' } };
    else if (tc === 'none') body.toolConfig = { functionCallingConfig: { mode: 'NONE' } };
    else if (tc === 'required') body.toolConfig = { functionCallingConfig: { mode: 'ANY' } };
    else body.toolConfig = { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: [tc.function.name] } };
  }

  const g: GeminiGenerationConfig = {};
  if (typeof req.temperature === 'number') g.temperature = req.temperature;
  if (typeof req.top_p === 'number') g.topP = req.top_p;
  // vLLM's -1 (and 0) is top-k off: Gemini is told nothing.
  if (typeof req.top_k === 'number' && req.top_k >= 1) g.topK = req.top_k;
  if (typeof req.n === 'number') g.candidateCount = req.n;
  const max = req.max_completion_tokens ?? req.max_tokens;
  if (typeof max === 'number') g.maxOutputTokens = max;
  if (req.stop !== undefined && req.stop !== null) g.stopSequences = Array.isArray(req.stop) ? req.stop : [req.stop];
  if (typeof req.presence_penalty === 'number') g.presencePenalty = req.presence_penalty;
  if (typeof req.frequency_penalty === 'number') g.frequencyPenalty = req.frequency_penalty;
  if (typeof req.seed === 'number') g.seed = req.seed;
  const rf = req.response_format;
  if (rf?.type === 'json_object') g.responseMimeType = 'application/json';
  else if (rf?.type === 'json_schema') {
    g.responseMimeType = 'application/json';
    const schema = (rf.json_schema as { schema?: unknown } | undefined)?.schema;
    if (schema) g.responseJsonSchema = schema;
  }
  if (req.logprobs === true) {
    g.responseLogprobs = true;
    if (typeof req.top_logprobs === 'number') g.logprobs = req.top_logprobs;
  }
  const thinking = thinkingConfig(req, model);
  if (thinking) g.thinkingConfig = thinking;
  // OpenAI's and OpenRouter's `modalities` (["image", "text"] for image generation).
  const modalities = (req as { modalities?: unknown }).modalities;
  if (Array.isArray(modalities) && modalities.length > 0 && modalities.every((m) => typeof m === 'string'))
    g.responseModalities = modalities.map((m) => m.toUpperCase());
  if (Object.keys(g).length > 0) body.generationConfig = g;
  return body;
}

/** Gemini finish reasons as OpenAI's; a candidate that called functions finished with `tool_calls`. */
export function finishReason(reason: string | undefined, calledTools: boolean): string | null {
  switch (reason) {
    case undefined:
    case '':
      return null;
    case 'STOP':
      return calledTools ? 'tool_calls' : 'stop';
    case 'MAX_TOKENS':
      return 'length';
    default:
      if (CONTENT_FILTER_FINISH.includes(reason)) return 'content_filter';
      // OTHER, FINISH_REASON_UNSPECIFIED, newer values, after some content (without any, the
      // answer failed: see failedAnswer)
      return calledTools ? 'tool_calls' : 'stop';
  }
}

/** Gemini's finish reasons for an answer (or image) it withheld. */
const CONTENT_FILTER_FINISH: readonly string[] = [
  'SAFETY',
  'RECITATION',
  'BLOCKLIST',
  'PROHIBITED_CONTENT',
  'SPII',
  'IMAGE_SAFETY',
  'IMAGE_PROHIBITED_CONTENT',
  'IMAGE_RECITATION',
  'LANGUAGE',
];

/**
 * Gemini's `logprobsResult` (the chosen token and the top candidates at each step) as OpenAI's
 * `logprobs.content`; null when Gemini sent none (it does only when asked, `responseLogprobs`).
 */
export function openAiLogprobs(r: unknown): { content: unknown[] } | null {
  const chosen = (r as { chosenCandidates?: unknown } | null)?.chosenCandidates;
  if (!Array.isArray(chosen) || chosen.length === 0) return null;
  const top = (r as { topCandidates?: unknown }).topCandidates;
  const entry = (c: unknown) => {
    const token = typeof (c as { token?: unknown })?.token === 'string' ? (c as { token: string }).token : '';
    const lp = (c as { logProbability?: unknown })?.logProbability;
    return { token, logprob: typeof lp === 'number' ? lp : 0, bytes: [...Buffer.from(token, 'utf8')] };
  };
  return {
    content: chosen.map((c, i) => {
      const alternatives = Array.isArray(top) ? (top[i] as { candidates?: unknown } | undefined)?.candidates : undefined;
      return { ...entry(c), top_logprobs: Array.isArray(alternatives) ? alternatives.map(entry) : [] };
    }),
  };
}

/**
 * Finish reasons that say Gemini could not produce the answer, and what each means. Some are the
 * request's doing (a function call the model could not form, a turn sent back without its
 * thought signature), some Gemini's own.
 */
const FAILED_FINISH: Readonly<Record<string, string>> = {
  MALFORMED_FUNCTION_CALL: "the model's function call could not be used",
  UNEXPECTED_TOOL_CALL: "the model's function call could not be used",
  TOO_MANY_TOOL_CALLS: 'the model made more function calls than Gemini allows in one turn',
  MISSING_THOUGHT_SIGNATURE:
    'an assistant turn with function calls was sent back without its thought signature (extra_content.google.thought_signature of each tool call, as the gateway returned it)',
  MALFORMED_RESPONSE: 'Gemini produced a response it could not complete',
};

/** A function call the model set out to make and could not: a failure even after text. */
const TOOL_FAILURE: ReadonlySet<string> = new Set(['MALFORMED_FUNCTION_CALL', 'UNEXPECTED_TOOL_CALL', 'TOO_MANY_TOOL_CALLS']);

/** Finish reasons that end an answer normally (or filtered), even an empty one. */
const NORMAL_FINISH: ReadonlySet<string> = new Set(['STOP', 'MAX_TOKENS', ...CONTENT_FILTER_FINISH]);

/**
 * A candidate Gemini ended without anything to show, for a reason that is not a normal end
 * (a failed function call, a missing thought signature, `OTHER`, a reason newer than this
 * code): a failed answer, not an empty one that stopped normally, which would be billed. The
 * next route may answer; the endpoint's circuit does not count it.
 */
function failedAnswer(
  c: GeminiCandidate,
  othersAnswered: () => boolean,
  /** What this candidate streamed in earlier events. */
  before: { answered: boolean; called: boolean } = { answered: false, called: false },
): void {
  const reason = c.finishReason;
  if (!reason || NORMAL_FINISH.has(reason)) return;
  // Another candidate (n > 1) answered: that is the answer, this one an empty choice. (Asked
  // only now: the common end is a normal one.)
  if (othersAnswered()) return;
  if (TOOL_FAILURE.has(reason)) {
    // The call the model meant to make is lost: text before it is not the answer (ending the
    // turn with `stop` would end an agent's loop as if the model were done). A call that did
    // come, in this event or streamed before, is.
    if (before.called || (c.content?.parts ?? []).some((p) => p.functionCall)) return;
  }
  // Text or a usable call came with it, in this event or streamed before: that is the answer.
  else if (hasAnswer(c) || before.answered) return;
  const why = typeof c.finishMessage === 'string' && c.finishMessage ? `: ${c.finishMessage.slice(0, 500)}` : '';
  throw new UpstreamError({
    failure: 'protocol',
    code: reason.toLowerCase(),
    message: `${ownValue(FAILED_FINISH, reason) ?? 'Gemini ended the answer without any content'} (${reason})${why}`,
    // What this request made the model do, or a one-off: one client's request must not open
    // the route's circuit for everyone.
    gatewayFault: true,
  });
}

/**
 * `usageMetadata` in OpenAI's terms: thoughts count as completion (reasoning) tokens, tool-use
 * prompts as prompt tokens, cached content as `cached_tokens` (already inside the prompt count).
 */
export function geminiUsage(u: GeminiUsageMetadata): Usage {
  const nn = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0);
  const prompt = nn(u.promptTokenCount) + nn(u.toolUsePromptTokenCount);
  const reasoning = nn(u.thoughtsTokenCount);
  const completion = nn(u.candidatesTokenCount) + reasoning;
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: nn(u.cachedContentTokenCount) },
    completion_tokens_details: { reasoning_tokens: reasoning },
  };
}

function toolCallOf(part: GeminiPart, newId: () => string): ToolCall {
  const fc = part.functionCall!;
  const call: ToolCall & { extra_content?: unknown } = {
    id: fc.id || newId(),
    type: 'function',
    function: { name: fc.name, arguments: JSON.stringify(fc.args ?? {}) },
  };
  if (part.thoughtSignature) call.extra_content = { google: { thought_signature: part.thoughtSignature } };
  return call;
}

/**
 * A `generateContent` answer as a chat completion, one choice per candidate: text parts →
 * `content`, thought parts → `reasoning_content`, function calls → `tool_calls` (Gemini's id,
 * else a new one; the thought signature rides in `extra_content.google.thought_signature`). A
 * prompt blocked by safety comes back as an empty answer with `finish_reason: content_filter`.
 */
/** Whether a candidate carries text or a function call (thoughts are not an answer). */
function hasAnswer(c: GeminiCandidate): boolean {
  return (c.content?.parts ?? []).some(
    (p) => p.functionCall || imageOf(p) !== undefined || (typeof p.text === 'string' && p.text !== '' && !p.thought),
  );
}

/**
 * An image the model made (an image model's `inlineData` part), as OpenRouter returns generated
 * images: `{type: "image_url", image_url: {url: "data:<type>;base64,..."}}` in the message's
 * (or the delta's) `images`.
 */
function imageOf(p: GeminiPart): { type: 'image_url'; image_url: { url: string } } | undefined {
  const d = p.inlineData;
  if (!d || typeof d.data !== 'string' || typeof d.mimeType !== 'string' || !d.mimeType.startsWith('image/') || p.thought) return undefined;
  return { type: 'image_url', image_url: { url: `data:${d.mimeType};base64,${d.data}` } };
}

export function fromGeminiResponse(res: GeminiResponse, model: string, newId: () => string = syntheticToolCallId): ChatResponse {
  const candidates = res.candidates ?? [];
  const choices: ChatResponse['choices'] = candidates.map((c, i) => {
    failedAnswer(c, () => candidates.some((other) => other !== c && hasAnswer(other)));
    let text = '';
    let reasoning = '';
    const toolCalls: ToolCall[] = [];
    const images: Array<NonNullable<ReturnType<typeof imageOf>>> = [];
    for (const p of c.content?.parts ?? []) {
      const image = imageOf(p);
      if (p.functionCall) toolCalls.push(toolCallOf(p, newId));
      else if (image) images.push(image);
      else if (typeof p.text === 'string') {
        if (p.thought) reasoning += p.text;
        else text += p.text;
      }
    }
    const message: ChatResponse['choices'][number]['message'] = {
      role: 'assistant',
      content: text === '' && toolCalls.length > 0 ? null : text,
    };
    if (toolCalls.length > 0) message.tool_calls = toolCalls;
    if (reasoning) message.reasoning_content = reasoning;
    if (images.length > 0) message.images = images;
    return {
      index: c.index ?? i,
      message,
      finish_reason: finishReason(c.finishReason, toolCalls.length > 0) ?? 'stop',
      logprobs: openAiLogprobs(c.logprobsResult),
    };
  });
  if (choices.length === 0 && res.promptFeedback?.blockReason) {
    choices.push({ index: 0, message: { role: 'assistant', content: '' }, finish_reason: 'content_filter', logprobs: null });
  }
  return {
    id: res.responseId ?? `gemini-${randomBytes(8).toString('hex')}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: res.modelVersion ?? model,
    choices,
    ...(res.usageMetadata ? { usage: geminiUsage(res.usageMetadata) } : {}),
  };
}

interface CandidateState {
  tools: number;
  finished: boolean;
  /** Text or a function call was sent for it. */
  answered?: boolean;
}

/**
 * Translates `streamGenerateContent?alt=sse` events into chat chunks. Each event is a whole
 * `GenerateContentResponse` holding the next parts of each candidate; a function call arrives
 * whole. `usageMetadata` is cumulative: each one rides on its event's last chunk as the figure so
 * far, and the last goes out again in a `choices: []` chunk from `end()`. Gemini sends no `[DONE]`: the stream is complete when every candidate has
 * its finish reason (or the prompt was blocked).
 */
export class GeminiStreamTranslator {
  private readonly created = Math.floor(Date.now() / 1000);
  private id = '';
  private readonly candidates = new Map<number, CandidateState>();
  private usage?: GeminiUsageMetadata;
  private blocked = false;

  constructor(
    private model: string,
    private readonly newId: () => string = syntheticToolCallId,
  ) {}

  get complete(): boolean {
    if (this.blocked) return true;
    if (this.candidates.size === 0) return false;
    for (const c of this.candidates.values()) if (!c.finished) return false;
    return true;
  }

  push(res: GeminiResponse): ChatChunk[] {
    this.id ||= res.responseId ?? `gemini-${randomBytes(8).toString('hex')}`;
    if (res.modelVersion) this.model = res.modelVersion;
    if (res.usageMetadata) this.usage = res.usageMetadata;
    const out: ChatChunk[] = [];
    const cands = res.candidates ?? [];
    if (cands.length === 0 && res.promptFeedback?.blockReason && !this.blocked) {
      this.blocked = true;
      out.push(this.chunk(0, { role: 'assistant', content: '' }, 'content_filter'));
    }
    cands.forEach((c: GeminiCandidate, i) => {
      const index = c.index ?? i;
      let state = this.candidates.get(index);
      if (!state) {
        state = { tools: 0, finished: false };
        this.candidates.set(index, state);
        out.push(this.chunk(index, { role: 'assistant', content: '' }, null));
      }
      const before = { answered: state.answered === true, called: state.tools > 0 };
      for (const p of c.content?.parts ?? []) {
        const image = imageOf(p);
        if (p.functionCall) {
          const call = toolCallOf(p, this.newId);
          out.push(this.chunk(index, { tool_calls: [{ index: state.tools++, ...call }] }, null));
          state.answered = true;
        } else if (image) {
          out.push(this.chunk(index, { images: [image] }, null));
          state.answered = true;
        } else if (typeof p.text === 'string' && p.text !== '') {
          out.push(this.chunk(index, p.thought ? { reasoning_content: p.text } : { content: p.text }, null));
          if (!p.thought) state.answered = true;
        }
      }
      // Each event's logprobs cover the tokens it added: they ride on its last chunk of this candidate.
      const lp = openAiLogprobs(c.logprobsResult);
      if (lp) {
        const last = out.findLast((o) => o.choices[0]?.index === index);
        if (last) last.choices[0].logprobs = lp;
      }
      failedAnswer(c, () => [...this.candidates].some(([other, st]) => other !== index && st.answered), before);
      const finish = finishReason(c.finishReason, state.tools > 0);
      if (finish && !state.finished) {
        state.finished = true;
        out.push(this.chunk(index, {}, finish));
      }
    });
    // The running figure rides on the event's last chunk, so a stream cut later is still billed
    // on Gemini's own count of the prompt and of what it had generated.
    if (res.usageMetadata && out.length > 0) out[out.length - 1].usage = geminiUsage(res.usageMetadata);
    return out;
  }

  /** The usage chunk, once the stream ended (none if Gemini reported no usage). */
  end(): ChatChunk[] {
    return this.usage
      ? [
          {
            id: this.id,
            object: 'chat.completion.chunk',
            created: this.created,
            model: this.model,
            choices: [],
            usage: geminiUsage(this.usage),
          },
        ]
      : [];
  }

  private chunk(index: number, delta: ChunkDelta, finish: string | null): ChatChunk {
    return {
      id: this.id,
      object: 'chat.completion.chunk',
      created: this.created,
      model: this.model,
      choices: [{ index, delta, finish_reason: finish }],
    };
  }
}

/** Google canonical codes as HTTP statuses, for errors that carry only the code. */
const STATUS_CODES: Readonly<Record<string, number>> = {
  INVALID_ARGUMENT: 400,
  FAILED_PRECONDITION: 400,
  OUT_OF_RANGE: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  RESOURCE_EXHAUSTED: 429,
  CANCELLED: 499,
  INTERNAL: 500,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
};

/**
 * A Gemini error response as a typed error, in OpenAI's terms: an invalid API key (which Gemini
 * answers with 400 `API_KEY_INVALID`) is a 401, a 400 `FAILED_PRECONDITION` (region, billing) a 403, `RESOURCE_EXHAUSTED` a 429 whose `RetryInfo`
 * becomes Retry-After, `UNAVAILABLE` (overloaded) a retryable 503 `overloaded`, other 5xx retryable 502s.
 */
export function geminiHttpError(status: number, text: string, route: RouteDef, retryAfterMs: number | undefined): UpstreamError {
  const e = parseGoogleError(text);
  const reasons = (e?.details ?? []).map((d) => d.reason).filter((r): r is string => typeof r === 'string');
  let httpStatus = status >= 400 ? status : (e?.status && STATUS_CODES[e.status]) || 502;
  const keyInvalid = reasons.includes('API_KEY_INVALID');
  if (keyInvalid) httpStatus = 401;
  else httpStatus = googleStatus(httpStatus, e);
  const message = e?.message ?? text.trim().slice(0, 2000);
  const unavailable = httpStatus === 503;
  return providerHttpError(
    httpStatus,
    {
      message,
      // UNAVAILABLE is Gemini's "model is overloaded": the same signal as Anthropic's 529.
      code: keyInvalid ? 'invalid_api_key' : unavailable ? 'overloaded' : (e?.status ?? null),
      status: unavailable ? 503 : undefined,
      type: unavailable ? 'server_error' : undefined,
    },
    route,
    retryAfterMs ?? googleRetryDelayMs(e),
  );
}

/** An OpenAI embeddings request as one `batchEmbedContents` call (text inputs only). */
export function toGeminiEmbedRequest(req: EmbeddingsRequest, model: string, taskType?: string): GeminiBatchEmbedRequest {
  const inputs = typeof req.input === 'string' ? [req.input] : req.input;
  if (!Array.isArray(inputs) || inputs.some((x) => typeof x !== 'string'))
    throw unsupported('Gemini embeds text: send "input" as a string or an array of strings', 'input');
  const path = geminiModelPath(model);
  return {
    requests: (inputs as string[]).map((text) => ({
      model: path,
      content: { parts: [{ text }] },
      ...(typeof req.dimensions === 'number' ? { outputDimensionality: req.dimensions } : {}),
      ...(taskType ? { taskType } : {}),
    })),
  };
}

/** `batchEmbedContents`' answer in OpenAI's shape (Gemini reports no usage; the gateway estimates it). */
export function fromGeminiEmbedResponse(res: GeminiBatchEmbedResponse, model: string): EmbeddingsResponse {
  return {
    object: 'list',
    data: (res.embeddings ?? []).map((e, index) => ({ object: 'embedding' as const, index, embedding: e.values ?? [] })),
    model,
  };
}
