import type { ChatRequest } from '../common/chat.types';
import { tokenPrice, unitPrice, FREE, type Pricing } from '../common/money';
import { estimatePromptTokens } from '../common/tokens';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { countImages } from '../common/tokens';
import { claudeOutputAllowance } from '../adapters/anthropic/anthropic.mapper';
import { chatCharge, chatCharge as charge, promptCharge } from './charge-estimate';

const pricing = (prompt: string, completion: string, extra: Partial<Pricing> = {}): Pricing => ({
  prompt: tokenPrice(prompt),
  completion: tokenPrice(completion),
  request: FREE,
  image: FREE,
  ...extra,
});

function model(over: Partial<ModelDef> = {}, routes: Array<Partial<RouteDef>> = [{}]): ModelDef {
  return {
    id: 'm',
    contextLength: 10_000,
    maxCompletionTokens: null,
    pricing: pricing('1', '2'),
    routes: routes as RouteDef[],
    ...over,
  } as ModelDef;
}

const req = (over: Partial<ChatRequest> = {}): ChatRequest => ({
  model: 'm',
  messages: [{ role: 'user', content: 'hello world, how are you?' }],
  ...over,
});

describe('charge estimates', () => {
  const prompt = estimatePromptTokens(req());

  it("reserves for the thinking budget a Claude route adds to the client's max_tokens", () => {
    const claude = model({ pricing: pricing('1', '2') }, [{ kind: 'anthropic' }]);
    // What GatewayCalls passes: each route's adapter's outputLimit (the Anthropic adapter's here).
    const chatCharge = (m: ModelDef, r: ChatRequest) =>
      charge(m, r, (route, allowed) => (route.kind === 'anthropic' ? claudeOutputAllowance(r, allowed, 'claude-sonnet-4-5') : allowed));
    // reasoning_effort high is a 4,096-token budget; with max_tokens 100 Claude is asked for 4,196.
    const high = chatCharge(claude, req({ max_tokens: 100, reasoning_effort: 'high' }));
    expect(high.costPico).toBe(BigInt(prompt) * 1_000_000n + 4196n * 2_000_000n);
    // A limit the budget fits in is not raised; nor is any limit on routes that are not Claude's.
    expect(chatCharge(claude, req({ max_tokens: 8000, reasoning_effort: 'high' })).costPico).toBe(
      BigInt(prompt) * 1_000_000n + 8000n * 2_000_000n,
    );
    const compat = model({ pricing: pricing('1', '2') }, [{ kind: 'openai_compat' }]);
    expect(chatCharge(compat, req({ max_tokens: 100, reasoning_effort: 'high' })).costPico).toBe(
      BigInt(prompt) * 1_000_000n + 100n * 2_000_000n,
    );
    // Tokens per minute count what the client asked for.
    expect(high.tokens).toBe(prompt + 100);
  });

  it('reserves at the dearest price a token may have: cache writes for the prompt, reasoning for the completion', () => {
    const dear = model({ pricing: pricing('1', '2', { input_cache_write: tokenPrice('1.25'), internal_reasoning: tokenPrice('5') }) });
    // One-hour cache writes cost twice the prompt price (no input_cache_write_1h set).
    expect(chatCharge(dear, req({ max_tokens: 100 })).costPico).toBe(BigInt(prompt) * 2_000_000n + 100n * 5_000_000n);
    // Cheaper special prices do not lower it below the plain ones.
    const cheap = model({ pricing: pricing('1', '2', { input_cache_write_1h: tokenPrice('0.5'), internal_reasoning: tokenPrice('1') }) });
    expect(chatCharge(cheap, req({ max_tokens: 100 })).costPico).toBe(BigInt(prompt) * 1_000_000n + 100n * 2_000_000n);
  });

  it('reserves the prompt plus max_tokens (times n) at the model price', () => {
    const c = chatCharge(model(), req({ max_tokens: 100, n: 2 }));
    expect(c.tokens).toBe(prompt + 200);
    // USD per million: 1 for the prompt, 2 for the completion; pico-dollars per token = price * 1e6
    expect(c.costPico).toBe(BigInt(prompt) * 1_000_000n + 200n * 2_000_000n);
    expect(chatCharge(model(), req({ max_tokens: 50, max_completion_tokens: 10 })).tokens).toBe(prompt + 10);
  });

  it("caps what the client allows at the model's maximum output", () => {
    const c = chatCharge(model({ maxCompletionTokens: 300 }), req({ max_tokens: 100_000, n: 2 }));
    expect(c.tokens).toBe(prompt + 600);
    expect(c.costPico).toBe(BigInt(prompt) * 1_000_000n + 600n * 2_000_000n);
  });

  it('without max_tokens, reserves the model maximum output, else what is left of the context', () => {
    expect(chatCharge(model({ maxCompletionTokens: 300 }), req()).costPico).toBe(BigInt(prompt) * 1_000_000n + 300n * 2_000_000n);
    expect(chatCharge(model(), req()).costPico).toBe(BigInt(prompt) * 1_000_000n + BigInt(10_000 - prompt) * 2_000_000n);
    // Tokens per minute count only what the client asked for.
    expect(chatCharge(model(), req()).tokens).toBe(prompt);
  });

  it('takes the dearest route pricing, the per-request fee and images', () => {
    const m = model({}, [{}, { pricing: pricing('1', '10', { request: unitPrice('0.01'), image: unitPrice('0.002') }) }]);
    const r = req({
      max_tokens: 10,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what?' },
            { type: 'image_url', image_url: { url: 'data:,' } },
          ],
        },
      ],
    });
    expect(countImages(r)).toBe(1);
    const p = estimatePromptTokens(r);
    expect(chatCharge(m, r).costPico).toBe(BigInt(p) * 1_000_000n + 10n * 10_000_000n + 10_000_000_000n + 2_000_000_000n);
  });

  it('charges a prompt-only request (embeddings) for its prompt', () => {
    expect(promptCharge(model(), 1000)).toEqual({ tokens: 1000, costPico: 1000n * 1_000_000n, inputOnly: true });
  });
});
