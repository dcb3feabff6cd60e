import { Readable } from 'node:stream';
import { splitLines, type SpoolLine } from './spool-lines';

async function read(chunks: Array<string | Buffer>, start = 0): Promise<SpoolLine[]> {
  const out: SpoolLine[] = [];
  for await (const line of splitLines(Readable.from(chunks.map((c) => Buffer.from(c))), start)) out.push(line);
  return out;
}

async function lines(chunks: Array<string | Buffer>): Promise<string[]> {
  return (await read(chunks)).map((l) => l.text);
}

describe('splitLines', () => {
  it('yields lines whole however the chunks cut them', async () => {
    await expect(lines(['{"a":1}\n{"b"', ':2}\n', '{"c":3}\n'])).resolves.toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
    await expect(lines(['ab', 'cd', 'ef\ngh', '\n'])).resolves.toEqual(['abcdef', 'gh']);
    await expect(lines(['\n\nx\n'])).resolves.toEqual(['', '', 'x']);
  });

  it('yields a last line without its newline (a write cut short), and nothing for no text', async () => {
    await expect(lines(['{"a":1}\n{"trunc'])).resolves.toEqual(['{"a":1}', '{"trunc']);
    await expect(lines([])).resolves.toEqual([]);
    await expect(lines(['', ''])).resolves.toEqual([]);
  });

  it('keeps characters the chunks split', async () => {
    // "é" is two bytes and "😀" four: cut inside each, the lines still hold whole characters.
    const bytes = Buffer.from('é1\n😀2\n');
    await expect(lines([bytes.subarray(0, 1), bytes.subarray(1, 5), bytes.subarray(5)])).resolves.toEqual(['é1', '😀2']);
  });

  it("gives each line's byte offset, exact past multi-byte characters and broken UTF-8", async () => {
    // A crash cut "é" in half (0xc3), and the next write went on from there: decoded, that byte
    // is one U+FFFD of three bytes, and offsets counted from the text would be one byte late.
    const file = Buffer.concat([Buffer.from('😀a\n{"x":"'), Buffer.from([0xc3]), Buffer.from('{"b":1}\n\n{"c":2}\nlast')]);
    const got = await read([file.subarray(0, 3), file.subarray(3, 9), file.subarray(9, 10), file.subarray(10)], 100);
    expect(got.map((l) => l.offset)).toEqual([100, 106, 121, 122, 130]);
    for (const l of got.slice(2))
      expect(
        file
          .subarray(l.offset - 100)
          .toString('utf8')
          .startsWith(l.text),
      ).toBe(true);
    expect(got.map((l) => l.text).slice(2)).toEqual(['', '{"c":2}', 'last']);
  });

  it('stops reading when the consumer stops', async () => {
    let pulled = 0;
    async function* source(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield Buffer.from(`${i}\n`);
      }
    }
    for await (const line of splitLines(source())) if (line.text === '2') break;
    expect(pulled).toBe(3);
  });
});
