/**
 * Stable error codes, in one place (undici's UND_ERR_*, Fastify's FST_ERR_*).
 * Config codes name what a validator found; runtime codes double as the `reason`
 * label of `switchyard_upstream_errors_total`. Every code is documented in the README
 * (a test checks it).
 */
export const ConfigCodes = {
  SY_ERR_CONFIG_YAML: 'the YAML text does not parse',
  SY_ERR_CONFIG_FILE: 'a config file cannot be read',
  SY_ERR_CONFIG_UNKNOWN_KEY: 'a key that the schema does not know (a typo?)',
  SY_ERR_CONFIG_TYPE: 'a value of the wrong type',
  SY_ERR_CONFIG_REQUIRED: 'a required key is missing',
  SY_ERR_CONFIG_VALUE: 'a value out of range or of the wrong form',
  SY_ERR_CONFIG_NAME: 'a name that does not match [A-Za-z0-9_-]+',
  SY_ERR_CONFIG_ENV: 'a ${VAR} reference to an unset environment variable',
  SY_ERR_VSET_SHADOWS_ROLE: 'a vset declared with the name of a role (every role is already a vset of its own name)',
  SY_ERR_UNKNOWN_ROLE: 'a reference to a role that does not exist',
  SY_ERR_UNKNOWN_VSET: 'a listener target naming a vset that does not exist',
  SY_ERR_UNKNOWN_CHANNEL: 'a channel that the vset or role does not have',
  SY_ERR_CHANNEL_UNMAPPED: 'a vset channel that does not map to a channel of one of its roles',
  SY_ERR_ROLE_NOT_IN_VSET: "a filter naming a role outside the listener's target vset",
  SY_ERR_UNKNOWN_FILTER: 'a filter type that no built-in or plugin registered',
  SY_ERR_FILTER_SCOPE: 'a filter that cannot run on this listener protocol (e.g. header rules on tcp)',
  SY_ERR_UNKNOWN_COMPONENT: 'a reference to a component that is not declared',
  SY_ERR_UNKNOWN_COMPONENT_TYPE: 'a component type that no built-in or plugin registered',
  SY_ERR_COMPONENT_TYPE_MISMATCH: 'a filter given a component of a type it cannot use',
  SY_ERR_ADDRESS_IN_USE: 'two listeners (or a listener and the admin API) on one address',
  SY_ERR_ADMIN_TOKEN_REQUIRED: 'a non-loopback admin address without a token',
  SY_ERR_PLUGIN_LOAD: 'a plugin module that cannot be loaded or does not register',
  SY_ERR_CONFIG_PUSH_FORBIDDEN: 'a config pushed through the admin API that loads a new plugin module or names a new access log file',
  SY_ERR_DUPLICATE_TYPE: 'two registrations of one filter or component type',
} as const;

export const RuntimeCodes = {
  SY_ERR_UPSTREAM_CONNECT: 'no endpoint of the role accepted a connection',
  SY_ERR_UPSTREAM_TIMEOUT: 'the upstream did not answer within the listener timeout',
  SY_ERR_UPSTREAM_RESET: 'the upstream closed or reset the connection mid-exchange',
  SY_ERR_UPSTREAM_PROTOCOL: 'the upstream sent a malformed response',
  SY_ERR_UPSTREAM_UPGRADE: 'a WebSocket or other upgrade to the upstream failed',
  SY_ERR_FILTER_FAILED: 'a filter threw or its promise rejected',
  SY_ERR_BAD_REQUEST: 'the client sent a request switchyard will not forward (more than one Host header, an invalid Host value): 400',
  SY_ERR_REQUEST_REFUSED: 'the forwarding library refused the request (or Node the answer) as switchyard made it, e.g. a header a plugin set: 500, not blamed on the upstream',
  SY_ERR_DRAIN_TIMEOUT: 'drainTimeout passed with the request still running on a replaced generation: switchyard cut it (counted as 503 when no response had started)',
  SY_ERR_UPLOAD_TOO_SLOW: 'the client sent its request body slower than the listener\'s minUploadRate: 408 (or a cut connection), its upstream request aborted; the client\'s fault, never the upstream\'s',
  SY_ERR_NO_FILE_DESCRIPTORS: 'switchyard had no file descriptor left to open an upstream connection (EMFILE, ENFILE): 503, never the upstream\'s fault',
  SY_ERR_BIND: 'a listener address could not be bound',
} as const;

export type ConfigCode = keyof typeof ConfigCodes;
export type RuntimeCode = keyof typeof RuntimeCodes;

/** Where in the (merged) config an error sits; file/line/column when it came from YAML. */
export interface ConfigIssue {
  code: ConfigCode;
  /** Dotted path with [i] for sequence items, e.g. `listeners.cart.filters[2].weights.cart-v3`. */
  path: string;
  message: string;
  file?: string;
  line?: number;
  column?: number;
}

/**
 * One line per issue: `file:line:col: path: message (code)`. Paths and messages quote
 * config text (a listener name, a header value), so the line is escaped (oneLine).
 */
export function formatIssue(i: ConfigIssue): string {
  const where = i.file ? `${i.file}${i.line ? `:${i.line}:${i.column ?? 1}` : ''}: ` : '';
  return oneLine(`${where}${i.path || '(root)'}: ${i.message} (${i.code})`);
}

/** C0 controls (CR, LF, tab, ESC, …), DEL, C1 controls, and the Unicode line and paragraph separators. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const CONTROL_ALL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const SHORT: Record<string, string> = { '\r': '\\r', '\n': '\\n', '\t': '\\t' };

/**
 * Text made safe for one log line: control characters are escaped JSON-style (`\r`,
 * `\n`, `\t`, `\u001b`), so a config value or a client's text (a YAML "a\nb" in a
 * listener name, an error message quoting it) can neither forge a log line nor send
 * escape sequences to a terminal (log injection, issue 11). Anything else is kept as
 * it is; a line without control characters is returned unchanged.
 */
export function oneLine(text: string): string {
  if (!CONTROL.test(text)) return text;
  return text.replace(CONTROL_ALL, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** An error that carries every issue of a rejected config. */
export class ConfigError extends Error {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super(`invalid config:\n${issues.map((i) => '  ' + formatIssue(i)).join('\n')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** A runtime failure with a stable code; `cause` keeps the story below it. */
export class SwitchyardError extends Error {
  readonly code: RuntimeCode;
  constructor(code: RuntimeCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SwitchyardError';
    this.code = code;
  }
}
