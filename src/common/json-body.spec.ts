import { jsonDepthExceeds } from './json-body';

describe('jsonDepthExceeds', () => {
  const nested = (n: number, open = '[', close = ']') => open.repeat(n) + close.repeat(n);

  it('allows exactly the limit and refuses one level more, arrays and objects alike', () => {
    expect(jsonDepthExceeds(nested(10), 10)).toBe(false);
    expect(jsonDepthExceeds(nested(11), 10)).toBe(true);
    const objects = (n: number) => '{"a":'.repeat(n - 1) + '{}' + '}'.repeat(n - 1);
    expect(JSON.parse(objects(11))).toBeDefined();
    expect(jsonDepthExceeds(objects(10), 10)).toBe(false);
    expect(jsonDepthExceeds(objects(11), 10)).toBe(true);
  });

  it('counts levels, not brackets: siblings do not add up', () => {
    const wide = JSON.stringify(Array.from({ length: 50 }, () => [[[1]]]));
    expect(jsonDepthExceeds(wide, 4)).toBe(false);
    expect(jsonDepthExceeds(wide, 3)).toBe(true);
  });

  it('ignores brackets inside strings, escaped quotes included', () => {
    const text = JSON.stringify({ s: '[[[[[[[[[[[[[[[[[[[[[[[[', t: 'say \\"[[[[[[[[[[[[[[[[[[["', u: '\\\\' });
    expect(jsonDepthExceeds(text, 1)).toBe(false);
    expect(jsonDepthExceeds(`[${text}]`, 1)).toBe(true);
  });
});
