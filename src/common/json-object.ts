/** A JSON object (not null, not an array): what a parsed body or upstream answer must be before its fields are read. */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `table[key]` when `key` is the table's own (never `toString` or `__proto__` from a client). */
export function ownValue<T>(table: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}
