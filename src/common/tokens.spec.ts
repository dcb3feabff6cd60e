import type { ChatMessage } from './chat.types';
import {
  contentText,
  estimateMessageTokens,
  estimatePromptTokens,
  estimateTextTokens,
  outputUnits,
  estimateImageTokens,
  unitsToTokens,
} from './tokens';

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

  it('counts a character of CJK as a token and one of other alphabets as half, as tokenizers do', () => {
    expect(estimateTextTokens('你好世界')).toBe(4);
    expect(estimateTextTokens('こんにちは、世界')).toBe(8);
    expect(estimateTextTokens('Привет мир')).toBe(5); // 9 Cyrillic letters, a space
    expect(estimateTextTokens('café crème')).toBe(3); // Latin-1 is Latin
    expect(estimateTextTokens('翻译: hello')).toBe(4); // 2 + 7 / 4
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

  it('counts array content like the same text as a string, plus its images', () => {
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
    expect(asParts).toBe(asString + 1600); // a remote image: its size is not known
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

describe('outputUnits', () => {
  it('counts text as a string or as parts, reasoning, and tool calls by name and arguments', () => {
    expect(outputUnits({ content: 'abcd' })).toBe(4);
    expect(outputUnits({ content: [{ type: 'text', text: 'ab' }, { type: 'text', text: 'cde' }, null] })).toBe(5);
    expect(outputUnits({ content: '', reasoning_content: 'x'.repeat(400) })).toBe(400);
    expect(outputUnits({ content: null, reasoning: 'why' })).toBe(3);
    expect(outputUnits({ content: null, tool_calls: [{ function: { name: 'f', arguments: '{"a":1}' } }, null, { type: 'custom' }] })).toBe(
      8,
    );
    expect(outputUnits(undefined)).toBe(0);
  });

  it('counts a refusal and an audio answer by its transcript', () => {
    expect(outputUnits({ content: null, refusal: 'I cannot help.' })).toBe(14);
    expect(outputUnits({ content: null, audio: { id: 'a', data: 'UklGR', transcript: 'Hello' } })).toBe(5);
    expect(outputUnits({ content: null, audio: null })).toBe(0);
  });

  it('counts output as the prompt estimate does: a CJK character a token, so 4 units', () => {
    const answer = '这是一个答案'; // 6 characters, about 6 tokens
    expect(outputUnits({ content: answer })).toBe(24);
    expect(unitsToTokens(outputUnits({ content: answer }))).toBe(estimateTextTokens(answer));
    expect(outputUnits({ content: 'Ответ' })).toBe(10);
  });
});

describe('estimateImageTokens', () => {
  const dataUrl = (type: string, bytes: Buffer) => `data:${type};base64,${bytes.toString('base64')}`;
  const png = (w: number, h: number) => {
    const b = Buffer.alloc(33);
    b.writeUInt32BE(0x89504e47, 0);
    b.writeUInt32BE(0x0d0a1a0a, 4);
    b.writeUInt32BE(13, 8);
    b.write('IHDR', 12, 'latin1');
    b.writeUInt32BE(w, 16);
    b.writeUInt32BE(h, 20);
    return dataUrl('image/png', b);
  };
  const gif = (w: number, h: number) => {
    const b = Buffer.alloc(13);
    b.write('GIF89a', 0, 'latin1');
    b.writeUInt16LE(w, 6);
    b.writeUInt16LE(h, 8);
    return dataUrl('image/gif', b);
  };
  const jpeg = (w: number, h: number) => {
    // SOI, an APP0 segment to skip, then SOF0 with the size.
    const app0 = Buffer.from([0xff, 0xe0, 0x00, 0x10, ...Buffer.from('JFIF\0'), 1, 1, 0, 0, 1, 0, 1, 0, 0]);
    const sof = Buffer.alloc(19);
    sof.writeUInt16BE(0xffc0, 0);
    sof.writeUInt16BE(17, 2);
    sof[4] = 8;
    sof.writeUInt16BE(h, 5);
    sof.writeUInt16BE(w, 7);
    return dataUrl('image/jpeg', Buffer.concat([Buffer.from([0xff, 0xd8]), app0, sof]));
  };
  const webp = (w: number, h: number) => {
    const b = Buffer.alloc(30);
    b.write('RIFF', 0, 'latin1');
    b.write('WEBPVP8X', 8, 'latin1');
    b.writeUIntLE(w - 1, 24, 3);
    b.writeUIntLE(h - 1, 27, 3);
    return dataUrl('image/webp', b);
  };

  it('reads the size of PNG, GIF, JPEG and WebP images and costs width x height / 750', () => {
    for (const make of [png, gif, jpeg, webp]) expect([make.name, estimateImageTokens(make(200, 150))]).toEqual([make.name, 40]);
  });

  it('scales a large image down as Anthropic does before counting', () => {
    // Anthropic's table: 1000 x 1000 is about 1334 tokens; anything that large or larger, about 1600.
    expect(estimateImageTokens(png(1000, 1000))).toBe(1334);
    // 4000 x 3000: to 1568 px on the long edge, then to 1.15 MP.
    expect(estimateImageTokens(png(4000, 3000))).toBe(1534);
  });

  it('counts an image it cannot measure (a remote URL, an unknown format) as a large one', () => {
    expect(estimateImageTokens('https://example.com/cat.png')).toBe(1600);
    expect(estimateImageTokens(dataUrl('image/bmp', Buffer.from('BM123456789')))).toBe(1600);
    expect(estimateImageTokens(undefined)).toBe(1600);
    // A header that claims no pixels is no size: a forged one must not make an image free.
    expect(estimateImageTokens(png(0, 5000))).toBe(1600);
  });

  it('adds images to a message estimate', () => {
    const text = estimateMessageTokens([{ role: 'user', content: [{ type: 'text', text: 'look' }] }]);
    const withImage = estimateMessageTokens([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'look' },
          { type: 'image_url', image_url: { url: png(200, 150) } },
        ],
      },
    ]);
    expect(withImage - text).toBe(40);
  });
});
