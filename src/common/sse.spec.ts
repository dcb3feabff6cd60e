import { readSse, SseDecoder, sseData, SSE_DONE, type SseEvent } from './sse';

async function* chunks(...parts: Array<Buffer | string>): AsyncGenerator<Buffer | string> {
  for (const p of parts) yield p;
}

async function collect(body: AsyncIterable<Uint8Array | string>): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const e of readSse(body)) out.push(e);
  return out;
}

/** The bytes of `text`, cut at the given byte offsets. */
function split(text: string, ...at: number[]): Buffer[] {
  const bytes = Buffer.from(text, 'utf8');
  const cuts = [0, ...at, bytes.length];
  return cuts.slice(1).map((end, i) => bytes.subarray(cuts[i], end));
}

/** The bytes of `text`, one byte per chunk. */
function byteByByte(text: string): Buffer[] {
  return [...Buffer.from(text, 'utf8')].map((b) => Buffer.from([b]));
}

const datas = (events: SseEvent[]) => events.map((e) => e.data);

describe('readSse', () => {
  it('reads events from one chunk', async () => {
    const events = await collect(chunks(Buffer.from('data: {"a":1}\n\ndata: [DONE]\n\n')));
    expect(datas(events)).toEqual(['{"a":1}', '[DONE]']);
  });

  it('reads events split across chunks at every byte', async () => {
    const text = 'data: one\n\nevent: delta\nid: 7\ndata: two\n\n';
    const events = await collect(chunks(...byteByByte(text)));
    expect(events).toEqual([
      { event: undefined, data: 'one', id: undefined },
      { event: 'delta', data: 'two', id: '7' },
    ]);
  });

  it('reads an event split mid-line and between events', async () => {
    const events = await collect(chunks('data: hel', 'lo\n', '\nda', 'ta: world\n\n'));
    expect(datas(events)).toEqual(['hello', 'world']);
  });

  it('reads CRLF line endings split between \\r and \\n', async () => {
    const events = await collect(chunks('data: a\r', '\ndata: b\r', '\n\r', '\ndata: c\r\n\r\n'));
    expect(datas(events)).toEqual(['a\nb', 'c']);
  });

  it('decodes a two-byte character split across chunks', async () => {
    const text = 'data: café\n\n';
    const e = Buffer.from(text).indexOf(0xc3);
    const events = await collect(chunks(...split(text, e + 1)));
    expect(datas(events)).toEqual(['café']);
  });

  it('decodes an emoji delivered one byte at a time', async () => {
    const events = await collect(chunks(...byteByByte('data: {"content":"hi 🚀 ok"}\n\n')));
    expect(events.map((ev) => JSON.parse(ev.data) as unknown)).toEqual([{ content: 'hi 🚀 ok' }]);
  });

  it('skips comment lines', async () => {
    const events = await collect(chunks(': keepalive\n\n', 'data: x\n', ': in the middle\n', '\n', ': trailing\n\n'));
    expect(datas(events)).toEqual(['x']);
  });

  it('joins multi-line data with newlines', async () => {
    const events = await collect(chunks('data: line 1\ndata: line 2\ndata:\ndata: line 4\n\n'));
    expect(datas(events)).toEqual(['line 1\nline 2\n\nline 4']);
  });

  it('discards an event that has no blank line before the stream ends', async () => {
    const events = await collect(chunks('data: complete\n\n', 'data: cut off\n'));
    expect(datas(events)).toEqual(['complete']);
  });

  it('yields each event before reading the next chunk', async () => {
    let pulled = 0;
    async function* body() {
      pulled++;
      yield Buffer.from('data: first\n\n');
      pulled++;
      yield Buffer.from('data: second\n\n');
    }
    const it = readSse(body());
    const first = await it.next();
    expect(first.value).toMatchObject({ data: 'first' });
    expect(pulled).toBe(1);
    await it.return(undefined);
  });

  it('reads what sseData and SSE_DONE write', async () => {
    const events = await collect(chunks(sseData({ text: 'a\nb' }), SSE_DONE));
    expect(datas(events)).toEqual(['{"text":"a\\nb"}', '[DONE]']);
  });
});

describe('SseDecoder', () => {
  it('returns the events each push completes, and nothing for a partial one', () => {
    const d = new SseDecoder();
    expect(d.push('data: {"a":1}\n\ndata: {"b"')).toEqual([{ data: '{"a":1}', event: undefined, id: undefined }]);
    expect(d.push(':2}')).toEqual([]);
    expect(d.push('\n\n: keepalive\n\nevent: x\ndata: y\n\n')).toEqual([
      { data: '{"b":2}', event: undefined, id: undefined },
      { data: 'y', event: 'x', id: undefined },
    ]);
  });

  it('decodes a UTF-8 character split across pushes', () => {
    const d = new SseDecoder();
    const bytes = Buffer.from('data: é\n\n');
    expect(d.push(bytes.subarray(0, 7))).toEqual([]);
    expect(d.push(bytes.subarray(7)).map((e) => e.data)).toEqual(['é']);
  });
});

describe('SseDecoder: event size', () => {
  it('fails an event that grows past the limit, however it is cut', () => {
    const d = new SseDecoder(100);
    expect(d.push('data: ' + 'x'.repeat(60))).toEqual([]);
    expect(() => d.push('x'.repeat(60))).toThrow('sent a stream event longer than 100 characters');
  });

  it('counts from the last complete event, so long streams of small events pass', () => {
    const d = new SseDecoder(100);
    for (let i = 0; i < 50; i++) expect(d.push(`data: ${'y'.repeat(40)}\n\n`)).toHaveLength(1);
    expect(d.push('data: ' + 'z'.repeat(80))).toEqual([]);
    expect(d.push('\n\n')).toHaveLength(1);
  });
});

describe('SseDecoder: a body that is no event stream', () => {
  const after = (...parts: Array<string | Uint8Array>) => {
    const d = new SseDecoder();
    for (const p of parts) d.push(p);
    return d.notEventStream;
  };

  it('tells a page or a JSON answer from an event stream by how it starts', () => {
    expect(after('<html>502</html>')).toBe(true);
    expect(after('\r\n  {"id": "x", "choices": []}')).toBe(true);
    expect(after('data: {}\n\n')).toBe(false);
    expect(after(': keepalive\n\n')).toBe(false);
    expect(after('\n\nevent: message_start\ndata: {}\n\n')).toBe(false);
    expect(after(Buffer.from('\ufeffdata: {}\n\n'))).toBe(false); // a BOM first
    expect(after('', '  ')).toBe(false); // nothing yet
  });
});
