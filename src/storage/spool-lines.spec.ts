import { Readable } from 'node:stream';
import { splitLines } from './spool-lines';

async function lines(chunks: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const line of splitLines(Readable.from(chunks))) out.push(line);
  return out;
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

  it('keeps characters a byte stream splits, when read as utf8', async () => {
    // "é" is two bytes and "😀" four: cut inside each, a utf8 stream still yields whole characters.
    const bytes = Buffer.from('é1\n😀2\n');
    const stream = Readable.from([bytes.subarray(0, 1), bytes.subarray(1, 5), bytes.subarray(5)]).setEncoding('utf8');
    const out: string[] = [];
    for await (const line of splitLines(stream)) out.push(line);
    expect(out).toEqual(['é1', '😀2']);
  });

  it('stops reading when the consumer stops', async () => {
    let pulled = 0;
    async function* source(): AsyncGenerator<string> {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield `${i}\n`;
      }
    }
    for await (const line of splitLines(source())) if (line === '2') break;
    expect(pulled).toBe(3);
  });
});
