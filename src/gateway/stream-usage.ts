import type { ChatChunk, Usage } from '../common/chat.types';
import { outputUnits, textUnits, unitsToTokens } from '../common/tokens';
import { isSoundUsage, usageFromCounts } from '../common/usage';
import type { RequestRecord } from './request-record';

/**
 * OpenAI's usage rule for a relayed stream (chat and legacy completions): usage travels only in a
 * last chunk of its own (`choices: []`) right before `[DONE]`, and only when the client asked
 * (`stream_options.include_usage`); then every other chunk says `"usage": null`. Upstreams put it
 * elsewhere (on the finish chunk, or before the content), so the usage seen is recorded and a
 * usage-only chunk is held back to go last.
 */
export class StreamUsage {
  /** The upstream's usage-only chunk, held back. */
  held?: ChatChunk;
  /**
   * The client asked for usage: `stream_options.include_usage`, or OpenRouter's `usage: {include:
   * true}`; or asked under OpenRouter's base path, where usage always comes (see RequestRecord).
   */
  readonly wanted: boolean;

  constructor(
    req: { stream_options?: { include_usage?: boolean } | null; [k: string]: unknown },
    private readonly rec: RequestRecord,
  ) {
    const u = req.usage as { include?: unknown } | undefined;
    this.wanted =
      rec.openRouterBase || req.stream_options?.include_usage === true || (typeof u === 'object' && u !== null && u.include === true);
  }

  /**
   * Records the chunk's usage; false for a chunk without choices (a usage-only one is held),
   * else sets its `usage` field. Only the last chunk may come without choices: clients read
   * `choices[0]` of every other (Azure's `prompt_filter_results` chunk has none, nor one whose
   * usage was unusable), so such a chunk is not relayed.
   */
  take(chunk: ChatChunk): boolean {
    if (chunk.usage) {
      // Counts out of range (from any backend) are not shown or billed: the estimate stands in.
      const sound = isSoundUsage(chunk.usage);
      if (sound) {
        this.rec.usage = chunk.usage;
        // On a content chunk it is the figure so far (Gemini, Anthropic's message_start, vLLM's
        // continuous usage), covering the answer up to and including this chunk.
        this.rec.usageSoFarAt = chunk.choices.length > 0 ? this.rec.deliveredUnits + chunkUnits(chunk) : undefined;
        if (chunk.choices.length === 0) this.held = chunk;
      }
    }
    if (chunk.choices.length === 0) return false;
    // Assigned, not deleted: delete makes the chunk a slow dictionary object; JSON leaves an
    // undefined property out.
    chunk.usage = this.wanted ? null : undefined;
    return true;
  }

  /** The usage for the last chunk: the upstream's (as billed), else an estimate from what was delivered. */
  final(promptTokens: () => number): Usage {
    return this.rec.presentedUsage() ?? usageFromCounts(promptTokens(), unitsToTokens(this.rec.deliveredUnits));
  }
}

/** What a chunk delivers, as the surfaces count it: a chat delta's output, a completion's text. */
function chunkUnits(chunk: ChatChunk): number {
  let n = 0;
  for (const c of chunk.choices) {
    if (c.delta) n += outputUnits(c.delta);
    else {
      const text = (c as { text?: unknown }).text;
      if (typeof text === 'string') n += textUnits(text);
    }
  }
  return n;
}
