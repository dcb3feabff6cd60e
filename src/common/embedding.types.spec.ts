import { base64ToFloats, embeddingInputs, encodeEmbeddings, floatsToBase64, type EmbeddingsResponse } from './embedding.types';

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
