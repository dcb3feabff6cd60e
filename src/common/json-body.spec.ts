import 'reflect-metadata';
import { validateEnv } from '../config/env.schema';
import { jsonSyntaxError, nestingExceeds, parseEmbeddedJson, shapeProblem } from './json-body';

describe('nestingExceeds', () => {
  const arrays = (n: number): unknown => JSON.parse('['.repeat(n) + ']'.repeat(n));
  const objects = (n: number): unknown => JSON.parse('{"a":'.repeat(n - 1) + '{}' + '}'.repeat(n - 1));

  it('allows exactly the limit and refuses one level more, arrays and objects alike', () => {
    expect(nestingExceeds(arrays(10), 10)).toBe(false);
    expect(nestingExceeds(arrays(11), 10)).toBe(true);
    expect(nestingExceeds(objects(10), 10)).toBe(false);
    expect(nestingExceeds(objects(11), 10)).toBe(true);
    expect(nestingExceeds({ a: [{ b: [1] }] }, 4)).toBe(false);
    expect(nestingExceeds({ a: [{ b: [[1]] }] }, 4)).toBe(true);
  });

  it('counts levels, not containers: siblings do not add up, scalars and strings are leaves', () => {
    const wide = Array.from({ length: 50 }, () => [[[1]]]);
    expect(nestingExceeds(wide, 4)).toBe(false);
    expect(nestingExceeds(wide, 3)).toBe(true);
    expect(nestingExceeds('[[[[[[[[[[[[', 1)).toBe(false);
    expect(nestingExceeds(null, 0)).toBe(false);
    expect(nestingExceeds(42, 0)).toBe(false);
  });

  it('finds a deep branch after shallow ones, and survives nesting far beyond its limit', () => {
    expect(nestingExceeds({ a: 1, b: [2], c: { d: arrays(200) } }, 128)).toBe(true);
    expect(nestingExceeds(arrays(20_000), 128)).toBe(true);
  });
});

describe('shapeProblem', () => {
  const objectWiderThan = (text: string, limit: number) => shapeProblem(text, limit, 128) === 'wide';
  const members = (n: number, key = (i: number) => `k${i}`) =>
    JSON.stringify(Object.fromEntries(Array.from({ length: n }, (_, i) => [key(i), 1])));

  it('counts the members of each object, at any depth, and not the items of arrays', () => {
    expect(objectWiderThan(members(20), 20)).toBe(false);
    expect(objectWiderThan(members(21), 20)).toBe(true);
    expect(objectWiderThan(`{"a":[${members(21)}]}`, 20)).toBe(true);
    expect(objectWiderThan(`{"a":${members(20)},"b":${members(20)}}`, 20)).toBe(false);
    expect(objectWiderThan(JSON.stringify({ input: Array.from({ length: 500 }, (_, i) => i) }), 20)).toBe(false);
    expect(objectWiderThan(JSON.stringify(Array.from({ length: 500 }, () => ({ a: 1, b: 2 }))), 20)).toBe(false);
  });

  it('skips strings whole, escaped quotes and backslashes included', () => {
    const text = JSON.stringify({ content: 'a,b,'.repeat(200) + '\\",{,,,' + '"x"'.repeat(50), other: '\\' });
    expect(objectWiderThan(text, 20)).toBe(false);
    expect(
      objectWiderThan(
        members(21, (i) => `k"${i}\\`),
        20,
      ),
    ).toBe(true);
  });

  it('finds nesting past the depth limit before parsing, in a text long enough to scan', () => {
    const nested = (n: number) => `{"pad":"${'x'.repeat(200)}","a":${'['.repeat(n)}${']'.repeat(n)}}`;
    expect(shapeProblem(nested(9), 20, 10)).toBeUndefined(); // 10 levels with the outer object
    expect(shapeProblem(nested(10), 20, 10)).toBe('deep');
    expect(shapeProblem('['.repeat(5_000_000) + ']'.repeat(5_000_000), 10_000, 128)).toBe('deep');
    // Brackets in strings are text.
    expect(shapeProblem(`{"a":"${'['.repeat(300)}","b":"${'x'.repeat(100)}"}`, 20, 10)).toBeUndefined();
  });

  it('counts the arrays and objects of the whole text, which cost far more than their characters', () => {
    const many = (n: number) => `{"pad":"${'x'.repeat(100)}","zz":[${Array.from({ length: n }, () => '[]').join(',')}]}`;
    // The outer object and array, and n empty arrays.
    expect(shapeProblem(many(98), 10_000, 128, 100)).toBeUndefined();
    expect(shapeProblem(many(99), 10_000, 128, 100)).toBe('many');
    expect(shapeProblem(many(3_500_000), 10_000, 128)).toBe('many');
  });

  it('does not scan a text too short to hold more members than the limit', () => {
    // 21 members take at least 5 x 21 + 1 characters; up to 100 there is nothing to find.
    expect(objectWiderThan('{' + ','.repeat(98) + '}', 20)).toBe(false);
    expect(objectWiderThan('{' + ','.repeat(99) + '}', 20)).toBe(true);
  });
});

describe('BODY_RATE_GRACE_MS', () => {
  it('is at least a second: less refused bodies that had not begun (a client waiting for 100-continue)', () => {
    expect(() => validateEnv({ BODY_RATE_GRACE_MS: '0' })).toThrow(/BODY_RATE_GRACE_MS must be at least 1000/);
    expect(validateEnv({ BODY_RATE_GRACE_MS: '1000' }).BODY_RATE_GRACE_MS).toBe(1000);
    // Not checked while the pace limit is off.
    expect(validateEnv({ BODY_MIN_BYTES_PER_SECOND: '0', BODY_RATE_GRACE_MS: '0' }).BODY_MIN_BYTES_PER_SECOND).toBe(0);
  });
});

describe('BODY_IDLE_TIMEOUT_MS', () => {
  it("refuses a value past Node's timer range, which setTimeout would turn into 1 ms", () => {
    expect(() => validateEnv({ BODY_IDLE_TIMEOUT_MS: '3000000000' })).toThrow(/BODY_IDLE_TIMEOUT_MS/);
    expect(validateEnv({ BODY_IDLE_TIMEOUT_MS: '2147483647' }).BODY_IDLE_TIMEOUT_MS).toBe(2147483647);
  });
});

describe('parseEmbeddedJson', () => {
  it('holds JSON inside a string to the limits of a body, before parsing it', () => {
    const wide = JSON.stringify(Object.fromEntries(Array.from({ length: 10_001 }, (_, i) => [`k${i}`, 1])));
    expect(() => parseEmbeddedJson(wide)).toThrow(new RangeError('has an object of more than 10000 members'));
    expect(() => parseEmbeddedJson('['.repeat(200) + ']'.repeat(200))).toThrow(RangeError);
    expect(parseEmbeddedJson('{"city":"Rome"}')).toEqual({ city: 'Rome' });
    expect(() => parseEmbeddedJson('{oops')).toThrow(SyntaxError);
  });
});

describe('jsonSyntaxError', () => {
  const said = (text: string) => {
    try {
      JSON.parse(text);
    } catch (err) {
      return jsonSyntaxError(err);
    }
    throw new Error('parsed');
  };

  it('says what is wrong without quoting the text around it (a key, a prompt)', () => {
    expect(said('{"content": sk-CLIENTB-secret, "x": 1}')).toBe("Unexpected token 's'");
    expect(said('abc')).toBe("Unexpected token 'a'");
    expect(said('{"a":1')).toMatch(/^Expected ',' or '}' after property value in JSON at position 6/);
  });
});
