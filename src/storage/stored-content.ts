/**
 * What a row keeps of a request or response body larger than DB_STORE_CONTENT_LIMIT: the head
 * of its JSON text, and how large the whole was. The value no longer has the body's shape
 * (`request_content->'messages'` is null), so nothing reading the row mistakes it for the body.
 */
export interface TruncatedContent {
  truncated: true;
  /** Size of the whole body as JSON text, in UTF-8 bytes. */
  bytes: number;
  /** The body's JSON text, cut after as many characters as fit the limit. */
  head: string;
}

/**
 * The JSON text a row stores for a body, at most `maxBytes` UTF-8 bytes: the text itself when it
 * fits, else a `TruncatedContent`. Without a cap, one body past PostgreSQL's limits (a jsonb
 * string holds 256 MB; a statement's message 1 GB) was refused on every insert and its row
 * replayed from the spool for ever; SQLite binds at most 1e9 bytes.
 */
export function capStoredJson(json: string, maxBytes: number): string {
  // A UTF-16 unit is at most 3 UTF-8 bytes: short text needs no counting.
  if (json.length * 3 <= maxBytes) return json;
  const bytes = Buffer.byteLength(json);
  if (bytes <= maxBytes) return json;
  // Escaping (quotes, backslashes, control characters) makes the head's JSON longer than the
  // head: start from the limit and shrink in proportion until it fits; two rounds in practice.
  let keep = Math.min(json.length, maxBytes);
  for (;;) {
    let head = json.slice(0, keep);
    // Never end on half of a surrogate pair (it would be stored as U+FFFD).
    if (/[\ud800-\udbff]$/.test(head)) head = head.slice(0, -1);
    const text = JSON.stringify({ truncated: true, bytes, head } satisfies TruncatedContent);
    const size = Buffer.byteLength(text);
    if (size <= maxBytes || keep === 0) return text;
    keep = Math.floor((keep * maxBytes) / size) - 1;
    if (keep < 0) keep = 0;
  }
}

/**
 * A row's stored body as the JSON text it is stored as (capped), made once when the row is
 * queued: the writer knows how much memory its queue holds (rows of megabytes each), and neither
 * the insert nor the spool serialises the body again.
 */
export class StoredJson {
  constructor(readonly text: string) {}

  /** Whatever serialises the row as a whole gets the body back (not used on the writer's paths). */
  toJSON(): unknown {
    return JSON.parse(this.text);
  }
}
