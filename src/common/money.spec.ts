import {
  costPico,
  FREE,
  formatScaled,
  parseScaled,
  perTokenUsd,
  picoToUsd,
  tokenPrice,
  unitPrice,
  usdToPico,
  type Pricing,
  type TokenCounts,
} from './money';

describe('parseScaled', () => {
  it('scales decimal strings exactly', () => {
    expect(parseScaled('0.15', 6)).toBe(150_000n);
    expect(parseScaled('12', 3)).toBe(12_000n);
    expect(parseScaled('0.000001', 6)).toBe(1n);
    expect(parseScaled(' +2.5 ', 1)).toBe(25n);
  });

  it('rounds half up on the first dropped digit', () => {
    expect(parseScaled('0.0000005', 6)).toBe(1n);
    expect(parseScaled('0.00000049', 6)).toBe(0n);
    expect(parseScaled('1.5', 0)).toBe(2n);
    expect(parseScaled('1.4999', 0)).toBe(1n);
    expect(parseScaled('0.9999995', 6)).toBe(1_000_000n);
  });

  it('accepts numbers, including exponent form', () => {
    expect(parseScaled(0.15, 6)).toBe(150_000n);
    expect(parseScaled(3, 2)).toBe(300n);
    expect(parseScaled(1e-7, 12)).toBe(100_000n);
    expect(parseScaled(2.5e-8, 12)).toBe(25_000n);
    expect(parseScaled(5e-7, 6)).toBe(1n);
    expect(parseScaled(0.1 + 0.2, 6)).toBe(300_000n);
  });

  it.each<[string | number]>([['-1'], [-0.5], ['abc'], [''], ['1.2.3'], ['1,5'], [Number.NaN], [Number.POSITIVE_INFINITY], ['0x10']])(
    'rejects %p',
    (value) => {
      expect(() => parseScaled(value, 6)).toThrow(/is not a non-negative decimal number/);
    },
  );
});

describe('formatScaled', () => {
  it('prints a plain decimal without trailing zeros', () => {
    expect(formatScaled(150_000n, 6)).toBe('0.15');
    expect(formatScaled(1_000_000n, 6)).toBe('1');
    expect(formatScaled(1n, 12)).toBe('0.000000000001');
    expect(formatScaled(0n, 6)).toBe('0');
    expect(formatScaled(1_234_500n, 3)).toBe('1234.5');
    expect(formatScaled(42n, 0)).toBe('42');
    expect(formatScaled(-1_500n, 3)).toBe('-1.5');
  });

  it('round-trips with parseScaled', () => {
    for (const text of ['0', '0.000001', '3.14159', '1000000', '0.1']) expect(formatScaled(parseScaled(text, 6), 6)).toBe(text);
  });
});

describe('prices', () => {
  it('reads a token price as USD per million tokens', () => {
    expect(tokenPrice('0.15')).toEqual({ text: '0.15', pico: 150_000n });
    expect(tokenPrice('0.150')).toEqual({ text: '0.15', pico: 150_000n });
    expect(tokenPrice(2)).toEqual({ text: '2', pico: 2_000_000n });
  });

  it('reads a unit price as USD per unit', () => {
    expect(unitPrice('0.001')).toEqual({ text: '0.001', pico: 1_000_000_000n });
    expect(unitPrice(0)).toEqual(FREE);
  });

  it('shows per-token prices in USD per token, as OpenRouter does', () => {
    expect(perTokenUsd(tokenPrice('0.15'))).toBe('0.00000015');
    expect(perTokenUsd(tokenPrice('3'))).toBe('0.000003');
    expect(perTokenUsd(FREE)).toBe('0');
  });
});

describe('costPico', () => {
  const base: Pricing = { prompt: tokenPrice('1'), completion: tokenPrice('2'), request: FREE, image: FREE };
  const tokens = (t: Partial<TokenCounts>): TokenCounts => ({ prompt: 0, completion: 0, cachedRead: 0, cacheWrite: 0, reasoning: 0, ...t });

  it('bills prompt and completion tokens at their prices', () => {
    // 1000 × 1 USD/M + 500 × 2 USD/M = 0.002 USD
    const cost = costPico(tokens({ prompt: 1000, completion: 500 }), base);
    expect(cost).toBe(2_000_000_000n);
    expect(picoToUsd(cost)).toBe('0.002');
  });

  it('bills cached reads at their own price', () => {
    const pricing = { ...base, input_cache_read: tokenPrice('0.1') };
    expect(costPico(tokens({ prompt: 1000, cachedRead: 400 }), pricing)).toBe(600n * 1_000_000n + 400n * 100_000n);
  });

  it('bills cached reads at the prompt price when the model has no cache price', () => {
    expect(costPico(tokens({ prompt: 1000, cachedRead: 400 }), base)).toBe(1000n * 1_000_000n);
  });

  it('bills cache writes at their own price', () => {
    const pricing = { ...base, input_cache_read: tokenPrice('0.1'), input_cache_write: tokenPrice('1.25') };
    expect(costPico(tokens({ prompt: 1000, cachedRead: 300, cacheWrite: 200 }), pricing)).toBe(
      500n * 1_000_000n + 300n * 100_000n + 200n * 1_250_000n,
    );
  });

  it('bills one-hour cache writes at their own price, else at twice the prompt price', () => {
    const fiveMinutes = { ...base, input_cache_write: tokenPrice('1.25') };
    const t = tokens({ prompt: 1000, cacheWrite: 300, cacheWrite1h: 200 });
    // 700 plain, 100 five-minute writes, 200 one-hour writes at 2x the prompt price.
    expect(costPico(t, fiveMinutes)).toBe(700n * 1_000_000n + 100n * 1_250_000n + 200n * 2_000_000n);
    expect(costPico(t, { ...fiveMinutes, input_cache_write_1h: tokenPrice('1.9') })).toBe(
      700n * 1_000_000n + 100n * 1_250_000n + 200n * 1_900_000n,
    );
    // A model that does not price cache writes bills them all at the prompt price.
    expect(costPico(t, base)).toBe(1000n * 1_000_000n);
    // More one-hour writes than writes: only the writes count.
    expect(costPico(tokens({ prompt: 1000, cacheWrite: 100, cacheWrite1h: 400 }), fiveMinutes)).toBe(900n * 1_000_000n + 100n * 2_000_000n);
  });

  it('bills reasoning at internal_reasoning only when the model sets it', () => {
    const t = tokens({ completion: 500, reasoning: 200 });
    expect(costPico(t, base)).toBe(500n * 2_000_000n);
    expect(costPico(t, { ...base, internal_reasoning: tokenPrice('3') })).toBe(300n * 2_000_000n + 200n * 3_000_000n);
  });

  it('adds the per-request fee once per request', () => {
    const pricing = { ...base, request: unitPrice('0.001') };
    expect(costPico(tokens({ prompt: 10 }), pricing)).toBe(10n * 1_000_000n + 1_000_000_000n);
    expect(costPico(tokens({}), pricing, 3)).toBe(3_000_000_000n);
  });

  it('never counts more cached tokens than prompt tokens', () => {
    const pricing = { ...base, input_cache_read: tokenPrice('0.1'), input_cache_write: tokenPrice('1.25') };
    expect(costPico(tokens({ prompt: 100, cachedRead: 250 }), pricing)).toBe(100n * 100_000n);
    expect(costPico(tokens({ prompt: 100, cachedRead: 80, cacheWrite: 50 }), pricing)).toBe(80n * 100_000n + 20n * 1_250_000n);
  });

  it('never counts more reasoning tokens than completion tokens', () => {
    const pricing = { ...base, internal_reasoning: tokenPrice('3') };
    expect(costPico(tokens({ completion: 10, reasoning: 50 }), pricing)).toBe(10n * 3_000_000n);
  });

  it('is free when everything is free', () => {
    expect(costPico(tokens({ prompt: 1e6, completion: 1e6 }), { prompt: FREE, completion: FREE, request: FREE, image: FREE })).toBe(0n);
  });

  it('sums a million small costs exactly', () => {
    const pricing: Pricing = { prompt: tokenPrice('0.15'), completion: tokenPrice('0.6'), request: FREE, image: FREE };
    const one = costPico(tokens({ prompt: 7, completion: 3 }), pricing);
    expect(one).toBe(2_850_000n);
    let total = 0n;
    for (let i = 0; i < 1_000_000; i++) total += costPico(tokens({ prompt: 7, completion: 3 }), pricing);
    expect(total).toBe(one * 1_000_000n);
    expect(picoToUsd(total)).toBe('2.85');
  });
});

describe('costPico with images', () => {
  it('bills each image at the image price, on top of tokens and the request fee', () => {
    const pricing = { prompt: tokenPrice('1'), completion: tokenPrice('2'), request: unitPrice('0.001'), image: unitPrice('0.0025') };
    const tokens = { prompt: 1_000_000, completion: 0, cachedRead: 0, cacheWrite: 0, reasoning: 0 };
    expect(costPico(tokens, pricing, 1, 2)).toBe(usdToPico('1') + usdToPico('0.001') + 2n * usdToPico('0.0025'));
    expect(costPico(tokens, pricing, 1, 0)).toBe(usdToPico('1.001'));
  });
});
