import {
  base64ToFloats,
  embeddingInputs,
  embeddingsProblem,
  encodeEmbeddings,
  floatsToBase64,
  type EmbeddingsResponse,
} from './embedding.types';

describe('embedding encodings', () => {
  it("encodes floats as OpenAI's base64 (little-endian float32) and back", () => {
    const v = [0.5, -1.25, 3];
    const b64 = floatsToBase64(v);
    expect(Buffer.from(b64, 'base64')).toEqual(Buffer.from(new Float32Array(v).buffer));
    expect(base64ToFloats(b64)).toEqual(v);
  });

  it('gives each item the encoding the client asked for, whatever the upstream sent', () => {
    const res = (): EmbeddingsResponse => ({
      object: 'list',
      model: 'm',
      data: [
        { object: 'embedding', index: 0, embedding: [0.25, 0.5] },
        { object: 'embedding', index: 1, embedding: floatsToBase64([1, 2]) },
      ],
    });
    expect(encodeEmbeddings(res(), 'float').data.map((d) => d.embedding)).toEqual([
      [0.25, 0.5],
      [1, 2],
    ]);
    expect(encodeEmbeddings(res(), 'base64').data.map((d) => d.embedding)).toEqual([floatsToBase64([0.25, 0.5]), floatsToBase64([1, 2])]);
  });

  it('lists the inputs of every input shape', () => {
    expect(embeddingInputs('a')).toEqual(['a']);
    expect(embeddingInputs(['a', 'b'])).toEqual(['a', 'b']);
    expect(embeddingInputs([1, 2])).toEqual([[1, 2]]);
    expect(embeddingInputs([[1], [2, 3]])).toEqual([[1], [2, 3]]);
  });
});

describe('embeddingsProblem', () => {
  const item = (embedding: unknown, index?: unknown) => ({ object: 'embedding', embedding, ...(index === undefined ? {} : { index }) });

  it('takes vectors of floats and base64 of float32 values, with their indexes or none', () => {
    expect(embeddingsProblem({ data: [item([0.1, 0.2], 1), item(floatsToBase64([1, 2, 3]), 0)] }, 2)).toBeUndefined();
    expect(embeddingsProblem({ data: [item(floatsToBase64([1])), item([1])] }, 2)).toBeUndefined();
    // Unpadded and URL-safe base64, which Buffer reads too.
    const unpadded = floatsToBase64([1, 2, 3, 4, 5]).replace(/=+$/, '');
    expect(embeddingsProblem({ data: [item(unpadded, 0)] }, 1)).toBeUndefined();
    expect(embeddingsProblem({ data: [item(floatsToBase64([-1.5e-7, 3]).replace(/\+/g, '-').replace(/\//g, '_'), 0)] }, 1)).toBeUndefined();
  });

  it('refuses an answer of some items placed by index and some by position', () => {
    expect(embeddingsProblem({ data: [item([1], 2), item([2]), item([3], 0)] }, 3)).toBe(
      'answered some embeddings with an index and some without',
    );
  });

  it('checks a very long vector without running out of stack', () => {
    const long = floatsToBase64(new Array<number>(1_000_000).fill(0.5));
    expect(long.length).toBeGreaterThan(1_300_000);
    expect(embeddingsProblem({ data: [item(long, 0)] }, 1)).toBeUndefined();
    expect(embeddingsProblem({ data: [item(`${long}!`, 0)] }, 1)).toMatch(/not a list of numbers/);
  });

  it.each([
    ['text that is not base64', 'notarray'],
    ['base64 of no whole float32', Buffer.from([1, 2, 3, 4, 5, 6]).toString('base64')],
    ['base64 with stray characters', '!!!!AAAA'],
    ['an empty string', ''],
    ['an empty list', []],
    ['a list of text', ['0.1']],
  ])('refuses %s as an embedding', (_what, embedding) => {
    expect(embeddingsProblem({ data: [item(embedding, 0)] }, 1)).toMatch(/data\[0\]\) that is not a list of numbers/);
  });

  it('refuses indexes out of range, repeated or not whole numbers', () => {
    expect(embeddingsProblem({ data: [item([1], 5), item([1], 6)] }, 2)).toMatch(/index 5/);
    expect(embeddingsProblem({ data: [item([1], 0), item([1], 0)] }, 2)).toMatch(/data\[1\] with index 0/);
    expect(embeddingsProblem({ data: [item([1], '0')] }, 1)).toMatch(/index "0"/);
    expect(embeddingsProblem({ data: [item([1], 0.5)] }, 1)).toMatch(/index 0.5/);
  });
});
