import { Injectable } from '@nestjs/common';
import { setImmediate as setImmediatePromise, setTimeout as sleep } from 'node:timers/promises';
import type { ChatChunk, ChatRequest, ChatResponse, Usage } from '../../common/chat.types';
import { MAX_TIMER_MS } from '../../common/deadline';
import { UpstreamError } from '../../common/errors';
import { estimatePromptTokens } from '../../common/tokens';
import type { RouteDef } from '../../config/registry.types';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';

/** Route options of `kind: mock`. */
export interface MockOptions {
  /** Delay before the first token, ms. */
  ttftMs: number;
  /** Completion tokens per answer (capped by max_tokens). */
  tokens: number;
  /** Generation speed after the first token; 0 = all at once. */
  tokensPerSecond: number;
}

const WORDS = (
  'Hello from the HybridInference mock backend. It answers without any model or key so that the ' +
  'gateway can be tried, tested and measured. Each word of this text counts as one token, and the ' +
  'text repeats for as long as the route asks.'
).split(' ');

export function mockOptions(route: RouteDef): MockOptions {
  const o = route.options;
  const num = (v: unknown, d: number) =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : typeof v === 'string' && v.trim() !== '' && Number(v) >= 0 ? Number(v) : d;
  return { ttftMs: num(o.ttft_ms, 0), tokens: Math.floor(num(o.tokens, 16)), tokensPerSecond: num(o.tokens_per_second, 0) };
}

/** The longest answer the mock writes (tokens). */
export const MAX_MOCK_TOKENS = 1_000_000;

/** A flat-out stream lets other work run after this many tokens. */
const YIELD_EVERY_TOKENS = 64;

/** The i-th token of the mock's answer (each ends with a space except the last). */
export function mockToken(i: number, last: boolean): string {
  const w = WORDS[i % WORDS.length];
  return last ? w : `${w} `;
}

/**
 * A backend inside the gateway: answers every chat request with a deterministic text after a
 * configurable time to first token, at a configurable token rate. Serves the demo model, the
 * tests and the benchmark.
 */
@Injectable()
@LlmAdapter({ kind: 'mock', options: ['ttft_ms', 'tokens', 'tokens_per_second'] })
export class MockAdapter implements LlmAdapter {
  validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    // Bounded: a mock answer is built in memory, and its wait is one Node timer.
    for (const [key, max] of [
      ['ttft_ms', MAX_TIMER_MS],
      ['tokens', MAX_MOCK_TOKENS],
      ['tokens_per_second', 1e9],
    ] as const) {
      const v = route.options[key];
      if (v !== undefined && !(Number(v) >= 0 && Number(v) <= max))
        problems.push(`${route.where}: ${key} must be a number from 0 to ${max}`);
    }
    return problems;
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const opts = mockOptions(route);
    const count = completionTokens(req, opts);
    await wait(opts.ttftMs + (opts.tokensPerSecond > 0 ? ((count - 1) * 1000) / opts.tokensPerSecond : 0), ctx.signal);
    let text = '';
    for (let i = 0; i < count; i++) text += mockToken(i, i === count - 1);
    const n = choiceCount(req);
    return {
      id: `mock-${ctx.requestId}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: route.providerModelId,
      choices: Array.from({ length: n }, (_, index) => ({
        index,
        message: { role: 'assistant' as const, content: text },
        finish_reason: count < opts.tokens ? 'length' : 'stop',
        logprobs: null,
      })),
      usage: usage(req, count * n),
    };
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const opts = mockOptions(route);
    const count = completionTokens(req, opts);
    const base = {
      id: `mock-${ctx.requestId}`,
      object: 'chat.completion.chunk' as const,
      created: Math.floor(Date.now() / 1000),
      model: route.providerModelId,
    };
    // With n > 1, each step sends one chunk per choice, as OpenAI and vLLM do.
    const n = choiceCount(req);
    // Accepted at once; the wait is the first token's.
    ctx.accepted?.();
    await wait(opts.ttftMs, ctx.signal);
    for (let index = 0; index < n; index++) {
      yield { ...base, choices: [{ index, delta: { role: 'assistant', content: '' }, finish_reason: null }] };
    }
    const gap = opts.tokensPerSecond > 0 ? 1000 / opts.tokensPerSecond : 0;
    for (let i = 0; i < count; i++) {
      if (i > 0 && gap > 0) await wait(gap, ctx.signal);
      else if (ctx.signal.aborted) throw aborted();
      // Flat out, the chunks go on in microtasks while the socket takes them (megabytes, into the
      // kernel's buffers): other requests get a turn every so many tokens, as a network upstream's
      // reads give them.
      else if (gap === 0 && i % YIELD_EVERY_TOKENS === YIELD_EVERY_TOKENS - 1) await setImmediatePromise();
      const content = mockToken(i, i === count - 1);
      for (let index = 0; index < n; index++) yield { ...base, choices: [{ index, delta: { content }, finish_reason: null }] };
    }
    const finish = count < opts.tokens ? 'length' : 'stop';
    for (let index = 0; index < n; index++) yield { ...base, choices: [{ index, delta: {}, finish_reason: finish }] };
    yield { ...base, choices: [], usage: usage(req, count * n) };
  }

  async probe(): Promise<ProbeResult> {
    return { ok: true, latencyMs: 0, detail: 'mock' };
  }
}

function choiceCount(req: ChatRequest): number {
  return Math.max(1, Math.floor(Number(req.n)) || 1);
}

function completionTokens(req: ChatRequest, opts: MockOptions): number {
  const cap = req.max_completion_tokens ?? req.max_tokens;
  return typeof cap === 'number' && cap >= 0 ? Math.min(opts.tokens, Math.floor(cap)) : opts.tokens;
}

function usage(req: ChatRequest, completion: number): Usage {
  const prompt = estimatePromptTokens(req);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function aborted(): UpstreamError {
  return new UpstreamError({ failure: 'aborted', message: 'the request was cancelled', provider: 'mock' });
}

async function wait(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw signal.reason instanceof UpstreamError ? signal.reason : aborted();
  if (ms <= 0) return;
  try {
    await sleep(ms, undefined, { signal });
  } catch {
    throw signal.reason instanceof UpstreamError ? signal.reason : aborted();
  }
}
