import type { ChatMessage } from './chat.types';
import { contentText, estimateMessageTokens, estimatePromptTokens, estimateTextTokens, outputChars } from './tokens';

describe('estimateTextTokens', () => {
  it('is zero for no text and at least one for any text', () => {
    expect(estimateTextTokens('')).toBe(0);
    expect(estimateTextTokens('a')).toBe(1);
  });

  it('grows with the text', () => {
    const short = estimateTextTokens('hello world');
    const long = estimateTextTokens('hello world '.repeat(100));
    expect(long).toBeGreaterThan(short * 50);
    expect(estimateTextTokens('x'.repeat(4000))).toBe(1000);
  });
});

describe('contentText', () => {
  it('returns string content as is', () => {
    expect(contentText('hi')).toBe('hi');
  });

  it('joins the text parts of array content and skips the rest', () => {
    expect(
      contentText([
        { type: 'text', text: 'look at ' },
        { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
        { type: 'text', text: 'this' },
      ]),
    ).toBe('look at this');
  });

  it('is empty for missing content', () => {
    expect(contentText(null)).toBe('');
    expect(contentText(undefined)).toBe('');
  });
});

describe('estimateMessageTokens', () => {
  it('grows with the number and length of messages', () => {
    const one: ChatMessage[] = [{ role: 'user', content: 'hello' }];
    const two: ChatMessage[] = [...one, { role: 'assistant', content: 'hi there' }];
    const longer: ChatMessage[] = [{ role: 'user', content: 'hello '.repeat(200) }];
    expect(estimateMessageTokens(two)).toBeGreaterThan(estimateMessageTokens(one));
    expect(estimateMessageTokens(longer)).toBeGreaterThan(estimateMessageTokens(one) + 200);
  });

  it('counts array content like the same text as a string', () => {
    const text = 'describe the picture in detail, please';
    const asString = estimateMessageTokens([{ role: 'user', content: text }]);
    const asParts = estimateMessageTokens([
      {
        role: 'user',
        content: [
          { type: 'text', text },
          { type: 'image_url', image_url: { url: 'https://e.com/a.png' } },
        ],
      },
    ]);
    expect(asParts).toBe(asString);
    expect(asParts).toBeGreaterThan(estimateMessageTokens([{ role: 'user', content: '' }]));
  });

  it('counts names and tool calls', () => {
    const bare: ChatMessage = { role: 'assistant', content: null };
    const withCall: ChatMessage = {
      ...bare,
      tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"query":"weather in Paris"}' } }],
    };
    expect(estimateMessageTokens([withCall])).toBeGreaterThan(estimateMessageTokens([bare]));
    expect(estimateMessageTokens([{ role: 'user', content: 'a', name: 'someone' }])).toBeGreaterThan(
      estimateMessageTokens([{ role: 'user', content: 'a' }]),
    );
  });
});

describe('estimatePromptTokens', () => {
  it('adds the tool definitions', () => {
    const messages: ChatMessage[] = [{ role: 'user', content: 'hi' }];
    const tools = [
      { type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' } } } } },
    ];
    expect(estimatePromptTokens({ messages })).toBe(estimateMessageTokens(messages));
    expect(estimatePromptTokens({ messages, tools })).toBeGreaterThan(estimateMessageTokens(messages));
  });
});

describe('outputChars', () => {
  it('counts text as a string or as parts, reasoning, and tool calls by name and arguments', () => {
    expect(outputChars({ content: 'abcd' })).toBe(4);
    expect(outputChars({ content: [{ type: 'text', text: 'ab' }, { type: 'text', text: 'cde' }, null] })).toBe(5);
    expect(outputChars({ content: '', reasoning_content: 'x'.repeat(400) })).toBe(400);
    expect(outputChars({ content: null, reasoning: 'why' })).toBe(3);
    expect(outputChars({ content: null, tool_calls: [{ function: { name: 'f', arguments: '{"a":1}' } }, null, { type: 'custom' }] })).toBe(
      8,
    );
    expect(outputChars(undefined)).toBe(0);
  });
});
