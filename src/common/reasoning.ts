/**
 * How hard to reason, across the APIs the gateway speaks: OpenAI's `reasoning_effort` (minimal,
 * low, medium, high, xhigh), a thinking budget in tokens (Anthropic's `budget_tokens`,
 * OpenRouter's `reasoning.max_tokens`), and Claude's adaptive-thinking `output_config.effort`
 * (low, medium, high, max).
 */
export type Effort = 'low' | 'medium' | 'high' | 'max';

/** The efforts the gateway can translate: OpenAI's, and Claude's `max`. */
export const EFFORTS: readonly string[] = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max'];

/** A thinking budget as an effort (Claude Code asks for budgets up to 31,999 tokens). */
export function effortForBudget(budget: number): Exclude<Effort, 'max'> {
  if (budget <= 2048) return 'low';
  if (budget <= 8192) return 'medium';
  return 'high';
}

/** An OpenAI `reasoning_effort` as Claude's adaptive-thinking effort; undefined for one without thinking (`none`). */
export function claudeEffort(effort: string): Effort | undefined {
  switch (effort) {
    case 'minimal':
    case 'low':
      return 'low';
    case 'medium':
      return 'medium';
    // Claude's own `xhigh` is for its newest models only; every adaptive-thinking model takes `max`.
    case 'high':
    case 'xhigh':
      return 'high';
    case 'max':
      return 'max';
    default:
      return undefined;
  }
}

/**
 * Whether an `anthropic-beta` value is interleaved thinking (any dated version), under which a
 * thinking budget is the whole turn's and may exceed `max_tokens`.
 */
export function isInterleavedThinkingBeta(beta: string): boolean {
  return beta.trim().startsWith('interleaved-thinking-');
}

/**
 * The start of a `redacted_thinking` block's data that carries another model's encrypted
 * reasoning through an Anthropic-surface client (see the Messages translation): the gateway's own
 * form, which Claude would refuse as its own redacted reasoning.
 */
export const REASONING_CARRIER_PREFIX = 'hybridinference-reasoning-v1.';

/** Whether a Messages content block is such a carrier. */
export function isReasoningCarrier(block: unknown): boolean {
  if (typeof block !== 'object' || block === null) return false;
  const { type, data } = block as { type?: unknown; data?: unknown };
  return type === 'redacted_thinking' && typeof data === 'string' && data.startsWith(REASONING_CARRIER_PREFIX);
}
