import { deltaChars } from './messages.service';

describe('deltaChars', () => {
  const event = (delta: Record<string, unknown>) => JSON.stringify({ type: 'content_block_delta', index: 0, delta });

  it('counts the characters a delta carries, whatever the order of its fields', () => {
    expect(deltaChars(event({ type: 'text_delta', text: 'Hello' }))).toBe(5);
    expect(deltaChars(JSON.stringify({ delta: { text: 'Hello', type: 'text_delta' }, index: 0, type: 'content_block_delta' }))).toBe(5);
    expect(deltaChars(event({ type: 'input_json_delta', partial_json: '{"city": "Ro' }))).toBe(12);
    expect(deltaChars(event({ type: 'thinking_delta', thinking: 'hmm' }))).toBe(3);
  });

  it('counts an escaped quote or backslash as one character, and nothing for unknown deltas', () => {
    expect(deltaChars(event({ type: 'text_delta', text: 'say "hi" \\ ok' }))).toBe('say "hi" \\ ok'.length);
    expect(deltaChars(event({ type: 'text_delta', text: '' }))).toBe(0);
    expect(deltaChars(event({ type: 'signature_delta', signature: 'abc' }))).toBe(0);
  });
});
