/** A line of a spool file, and where it starts in the file. */
export interface SpoolLine {
  text: string;
  /** Byte offset of the line's first byte (a replay cut short resumes at a line's offset). */
  offset: number;
}

/**
 * The lines of a file read in chunks of bytes (a file stream), as they arrive, each with its
 * byte offset. A spool file is read this way, never whole: a long outage leaves one larger than
 * the longest string V8 can make (2^29 - 24 characters, ~1M rows of 500 bytes), and
 * `readFile(path, 'utf8')` then throws on every replay, for ever. Memory holds a chunk and the
 * line being read, not the file.
 *
 * Lines are cut at the newline byte and decoded one by one (a newline byte is never part of a
 * UTF-8 sequence), so the offsets are exact even where a write cut short by a crash left broken
 * UTF-8: counted from decoded text, they would drift, and a replay resumed at one would start
 * inside a line and skip its row. `start` is the offset of the first chunk's first byte.
 *
 * A line spanning chunks is gathered as pieces and joined once, not by concatenating each chunk
 * onto the head (a 64 MB line in 64 KB chunks would be copied a thousand times). The last line
 * is yielded even without its newline (a write cut short by a crash); empty lines are yielded.
 */
export async function* splitLines(chunks: AsyncIterable<Buffer>, start = 0): AsyncGenerator<SpoolLine> {
  let head: Buffer[] = [];
  let offset = start;
  let at = start;
  for await (const chunk of chunks) {
    let from = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, from)) {
      head.push(chunk.subarray(from, nl));
      yield { text: (head.length === 1 ? head[0] : Buffer.concat(head)).toString('utf8'), offset };
      head = [];
      offset = at + nl + 1;
      from = nl + 1;
    }
    if (from < chunk.length) head.push(chunk.subarray(from));
    at += chunk.length;
  }
  if (head.length > 0) yield { text: Buffer.concat(head).toString('utf8'), offset };
}
