/**
 * An RFC 9110 token (§5.6.2): the syntax of a field (header) name (§5.1), and of
 * a cookie name (RFC 6265 §4.1.1). The one copy, for validation (header names in
 * filter configs) and for what parses them at run time (a component's metadata).
 */
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Whether `s` is a token: one or more tchar. */
export function isToken(s: string): boolean {
  return TOKEN_RE.test(s);
}
