/**
 * Half of a UTF-16 surrogate pair without its other half (text cut in the middle of an emoji,
 * or sent so on purpose). No UTF-8 text can hold one: PostgreSQL stores U+FFFD instead, and
 * SQLite the three bytes of its code point, which are not UTF-8 and read back as three U+FFFD.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, 'g');

export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/** `text` with each lone surrogate as U+FFFD, as a UTF-8 encoder writes it. */
export function wellFormed(text: string): string {
  return LONE_SURROGATE.test(text) ? text.replace(LONE_SURROGATES, '\uFFFD') : text;
}
