/** A JSON object (not null, not an array): what a parsed body or upstream answer must be before its fields are read. */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
