/**
 * The lines of a text read in chunks (a file stream), as they arrive. A spool file is read this
 * way, never whole: a long outage leaves one larger than the longest string V8 can make
 * (2^29 - 24 characters, ~1M rows of 500 bytes), and `readFile(path, 'utf8')` then throws on
 * every replay, for ever. Memory holds a chunk and the line being read, not the file.
 *
 * A line spanning chunks is gathered as pieces and joined once, not by concatenating each chunk
 * onto the head (a 64 MB line in 64 KB chunks would be copied a thousand times). The last line
 * is yielded even without its newline (a write cut short by a crash); empty lines are yielded.
 */
export async function* splitLines(chunks: AsyncIterable<string>): AsyncGenerator<string> {
  let head: string[] = [];
  for await (const chunk of chunks) {
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      head.push(chunk.slice(start, nl));
      yield head.length === 1 ? head[0] : head.join('');
      head = [];
      start = nl + 1;
    }
    if (start < chunk.length) head.push(chunk.slice(start));
  }
  if (head.length > 0) yield head.join('');
}
