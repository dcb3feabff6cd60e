/** The known keys a mistyped `key` is most likely meant to be (config files' and request options' keys). */
export function nearKeys(key: string, known: Iterable<string>): string[] {
  return [...known].filter((k) => editDistance(k, key) <= Math.min(2, Math.floor(key.length / 3)));
}

/** `did you mean "a" or "b"?` */
export function didYouMean(near: readonly string[]): string {
  return `did you mean ${near.map((k) => `"${k}"`).join(' or ')}?`;
}

/** Levenshtein distance, for short keys. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}
