/**
 * Does the string hold a lone surrogate (half of a UTF-16 pair, `'\ud800'`)? Such a string has no UTF-8 form:
 * `encodeURIComponent` throws a URIError on it and `Buffer.from` silently turns it into U+FFFD. (In a `u` regular
 * expression a well-formed pair is one code point, so only a lone half is a surrogate code point.)
 */
export function hasLoneSurrogate(text: string): boolean {
  return /\p{Surrogate}/u.test(text);
}
