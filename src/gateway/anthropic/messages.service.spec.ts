import { RequestRecord } from '../request-record';
import { deltaUnits, StreamTally } from './messages.service';

describe('deltaUnits', () => {
  const event = (delta: Record<string, unknown>) => JSON.stringify({ type: 'content_block_delta', index: 0, delta });

  it('counts the characters a delta carries, whatever the order of its fields', () => {
    expect(deltaUnits(event({ type: 'text_delta', text: 'Hello' }))).toBe(5);
    expect(deltaUnits(JSON.stringify({ delta: { text: 'Hello', type: 'text_delta' }, index: 0, type: 'content_block_delta' }))).toBe(5);
    expect(deltaUnits(event({ type: 'input_json_delta', partial_json: '{"city": "Ro' }))).toBe(12);
    expect(deltaUnits(event({ type: 'thinking_delta', thinking: 'hmm' }))).toBe(3);
  });

  it('counts an escaped quote or backslash as one character, and nothing for unknown deltas', () => {
    expect(deltaUnits(event({ type: 'text_delta', text: 'say "hi" \\ ok' }))).toBe('say "hi" \\ ok'.length);
    expect(deltaUnits(event({ type: 'text_delta', text: '' }))).toBe(0);
    expect(deltaUnits(event({ type: 'signature_delta', signature: 'abc' }))).toBe(0);
  });

  it('counts in estimate units, as the prompt is estimated: a CJK character as four', () => {
    expect(deltaUnits(event({ type: 'text_delta', text: '你好' }))).toBe(8);
    expect(deltaUnits(event({ type: 'text_delta', text: 'a\n你' }))).toBe(6);
  });
});

describe('StreamTally', () => {
  const ev = (event: string, data: Record<string, unknown>) => ({ event, data: JSON.stringify({ type: event, ...data }) });

  it('stores the streamed message block by block, server tools included', () => {
    const rec = new RequestRecord('r', 0);
    const tally = new StreamTally(true);
    for (const e of [
      ev('message_start', { message: { id: 'msg_1', usage: { input_tokens: 5, output_tokens: 1 } } }),
      ev('content_block_start', { index: 0, content_block: { type: 'server_tool_use', id: 'srvtoolu_1', name: 'web_search', input: {} } }),
      ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: '{"query":' } }),
      ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: '"weather"}' } }),
      ev('content_block_start', { index: 1, content_block: { type: 'text', text: '' } }),
      ev('content_block_delta', { index: 1, delta: { type: 'text_delta', text: 'Sunny.' } }),
      ev('message_delta', { delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 9 } }),
    ])
      tally.see(e, rec);
    tally.settle(rec);
    expect(rec.responseContent).toEqual({
      type: 'message',
      role: 'assistant',
      stop_reason: 'end_turn',
      content: [
        { type: 'server_tool_use', id: 'srvtoolu_1', name: 'web_search', input: { query: 'weather' } },
        { type: 'text', text: 'Sunny.' },
      ],
    });
  });
});
