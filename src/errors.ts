/**
 * Stable error codes, in one place (undici's UND_ERR_*, Fastify's FST_ERR_*).
 * Config codes name what a validator found; runtime codes what ended a request or
 * connection (UPSTREAM_FAILURES maps each upstream failure to its code, its `reason`
 * label in `switchyard_upstream_errors_total` and its status). Every code is documented in the README
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
  SY_ERR_TLS_FILE: 'a TLS file (ca, cert, key) that cannot be read, is not PEM, or a key that does not match its certificate',
  SY_ERR_CONFIG_PUSH_FORBIDDEN: 'a config pushed through the admin API that loads a new plugin module or names a new access log file',
  SY_ERR_DUPLICATE_TYPE: 'two registrations of one filter or component type',
  SY_ERR_CONFIG_SOURCE_NOT_BOOTSTRAP: 'a `source` outside the bootstrap file: in a pushed config or in an etcd document',
} as const;

export const RuntimeCodes = {
  SY_ERR_UPSTREAM_CONNECT: 'no endpoint of the role accepted a connection',
  SY_ERR_UPSTREAM_TIMEOUT: 'the upstream did not answer within the listener timeout',
  SY_ERR_UPSTREAM_RESET: 'the upstream closed or reset the connection mid-exchange',
  SY_ERR_UPSTREAM_PROTOCOL: 'the upstream sent a malformed response',
  SY_ERR_UPSTREAM_TLS: 'the TLS handshake with the upstream failed (its certificate did not verify, a name mismatch, an expired certificate, or it refused ours)',
  SY_ERR_UPSTREAM_UPGRADE: 'a WebSocket or other upgrade to the upstream failed',
  SY_ERR_FILTER_FAILED: 'a filter threw or its promise rejected',
  SY_ERR_BAD_REQUEST: 'the client sent a request switchyard will not forward as it came (a bad Host, ambiguous framing, a bad target: 400; an expectation other than 100-continue: 417; too many header lines: 431; a transfer coding other than chunked: 501; not HTTP/1.x: 505)',
  SY_ERR_REQUEST_REFUSED: 'the forwarding library refused the request (or Node the answer) as switchyard made it, e.g. a header a plugin set: 500, not blamed on the upstream',
  SY_ERR_DRAIN_TIMEOUT: 'drainTimeout passed with the request still running on a replaced generation: switchyard cut it (counted as 503 when no response had started)',
  SY_ERR_UPLOAD_TOO_SLOW: 'the client sent its request body slower than the listener\'s minUploadRate: 408 (or a cut connection), its upstream request aborted; the client\'s fault, never the upstream\'s',
  SY_ERR_NO_FILE_DESCRIPTORS: 'switchyard had no file descriptor left to open an upstream connection (EMFILE, ENFILE): 503, never the upstream\'s fault',
  SY_ERR_BIND: 'a listener address could not be bound',
} as const;

/**
 * Every way an exchange with an upstream can end in failure, and what it means: the
 * stable code (the access log's `upstreamError`), the `reason` label a failed try
 * counts under in `switchyard_upstream_errors_total`, the status switchyard answers
 * with, and whether a role is to blame (`upstream: false`: switchyard's own failure,
 * counted under no role, never fed to outlier detection, never retried).
 */
export const UPSTREAM_FAILURES = {
  connect: { code: 'SY_ERR_UPSTREAM_CONNECT', reason: 'connect-failure', status: 502, upstream: true },
  timeout: { code: 'SY_ERR_UPSTREAM_TIMEOUT', reason: 'timeout', status: 504, upstream: true },
  reset: { code: 'SY_ERR_UPSTREAM_RESET', reason: 'reset', status: 502, upstream: true },
  protocol: { code: 'SY_ERR_UPSTREAM_PROTOCOL', reason: 'protocol', status: 502, upstream: true },
  tls: { code: 'SY_ERR_UPSTREAM_TLS', reason: 'tls', status: 502, upstream: true },
  upgrade: { code: 'SY_ERR_UPSTREAM_UPGRADE', reason: 'reset', status: 502, upstream: true },
  refused: { code: 'SY_ERR_REQUEST_REFUSED', reason: null, status: 500, upstream: false },
  descriptors: { code: 'SY_ERR_NO_FILE_DESCRIPTORS', reason: null, status: 503, upstream: false },
} as const satisfies Record<string, { code: RuntimeCode; reason: UpstreamReason | null; status: number; upstream: boolean }>;

export type UpstreamFailure = keyof typeof UPSTREAM_FAILURES;

/** Why a try failed, as `switchyard_upstream_errors_total{reason}` says it ("ejected": the failure ejected its endpoint). */
export type UpstreamReason = 'connect-failure' | 'reset' | 'timeout' | 'protocol' | 'tls' | 'ejected';

/**
 * Codes of errors no upstream caused: the forwarding library (undici) or Node's HTTP
 * code refused the request, or the answer, as switchyard made it (a header a plugin
 * set, a pool switchyard already closed).
 */
const REFUSED_CODES = new Set([
  'UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_INVALID_RETURN_VALUE', 'UND_ERR_DESTROYED', 'UND_ERR_CLOSED',
  'UND_ERR_BPL_MISSING_UPSTREAM', 'UND_ERR_MAX_ORIGINS_REACHED',
  'ERR_INVALID_CHAR', 'ERR_INVALID_HTTP_TOKEN', 'ERR_HTTP_INVALID_HEADER_VALUE', 'ERR_HTTP_INVALID_STATUS_CODE',
  'ERR_HTTP_HEADERS_SENT', 'ERR_UNESCAPED_CHARACTERS', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE',
  'SY_POOL_CLOSED',
]);


/**
 * What a transport error from an upstream connection means, for HTTP, upgrades and
 * TCP alike. `sent`: the request (or the connection's first byte) reached a
 * connected socket. Before that, every failure is a connect failure (the next
 * endpoint may take the work), except switchyard's own: a request the library
 * refused (`refused`) or no descriptor left (`descriptors`). After it, one of our
 * own time limits (`timeout`: an UpstreamTimeout; undici's are off), a malformed
 * answer (`protocol`), or a reset (the kernel's ETIMEDOUT of a dead peer included).
 */
export function classifyTransportError(err: unknown, how: { sent: boolean }): UpstreamFailure {
  const code = (err as { code?: unknown } | null)?.code;
  if ((typeof code === 'string' && REFUSED_CODES.has(code))
    || err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError || err instanceof ReferenceError) return 'refused';
  if (code === 'EMFILE' || code === 'ENFILE') return 'descriptors';
  if (err instanceof UpstreamTimeout) return err.phase === 'connect' ? 'connect' : 'timeout';
  if (isTlsError(code)) return 'tls';
  if (!how.sent) return 'connect';
  if (typeof code === 'string' && (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || code === 'SY_MALFORMED_MESSAGE')) return 'protocol';
  if ((err as Error | null)?.name === 'HTTPParserError') return 'protocol';
  return 'reset';
}

/**
 * Certificate verification (OpenSSL's X509 names, Node's altname check) and TLS
 * alerts (ERR_SSL_*: a handshake failure, a peer that wanted our certificate).
 */
const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REVOKED', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID', 'ERR_TLS_HANDSHAKE_TIMEOUT', 'EPROTO',
]);

export function isTlsError(code: unknown): boolean {
  return typeof code === 'string' && (TLS_CODES.has(code) || code.startsWith('ERR_SSL_'));
}

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

/**
 * An error switchyard raises, with a stable code; `cause` keeps the story below it,
 * and the message already tells it in one line (`component cart-limit: init: connect
 * ECONNREFUSED 127.0.0.1:6379`).
 */
export class SwitchyardError extends Error {
  readonly code: SwitchyardCode;
  constructor(code: SwitchyardCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SwitchyardError';
    this.code = code;
  }
}

/**
 * A time limit of switchyard's own on an upstream exchange ran out: `connect` (to
 * one endpoint: the next may take the work), `headers` (a try's answer, perTryTimeout
 * or the upstream timeout), `body` (the next chunk of an answer), `total` (every
 * try together) or `upgrade` (an upgrade's answer). Our own timers, not undici's,
 * which run on a 0.5 s clock for 1 s and more.
 */
export class UpstreamTimeout extends SwitchyardError {
  readonly phase: 'connect' | 'headers' | 'body' | 'total' | 'upgrade';
  constructor(phase: UpstreamTimeout['phase'], message: string) {
    super(phase === 'connect' ? 'SY_ERR_UPSTREAM_CONNECT' : 'SY_ERR_UPSTREAM_TIMEOUT', message);
    this.name = 'UpstreamTimeout';
    this.phase = phase;
  }
}

/**
 * Why the control path refused a change or the admin API a request (the `code` of
 * every admin API error body). A rejected change leaves the running generation as it was.
 */
export const ControlCodes = {
  SY_ERR_CONFIG_INVALID: 'a config with errors: 400, each error with its own code in `errors`',
  SY_ERR_COMPONENT_INIT: 'a new component instance did not come up (unknown type; create, init, inherit or ready failed; ready answered false; or its readyTimeout passed): the change fails (409)',
  SY_ERR_COMPONENT_UPDATE: "a component's in-place update (applyConfig) failed: the change fails (409)",
  SY_ERR_COMPONENT_CLOSE: "a component's close() failed (logged; the instance is dropped anyway)",
  SY_ERR_FILTER_CREATE: "a filter's create() threw: the change fails (409)",
  SY_ERR_FILTER_CLOSE: "a filter's close() threw or rejected (logged; the other releases still run)",
  SY_ERR_ACCESS_LOG_OPEN: 'the access log path cannot be opened for append: the change fails (409)',
  SY_ERR_APPLY_FAILED: "applying a config failed in a way no other code names (a plugin's code throwing outside create): the change fails (409)",
  SY_ERR_SHUTTING_DOWN: 'a config change that arrived while switchyard shuts down: refused (409)',
  SY_ERR_CONFIG_SOURCE_DOWN: 'the config source (etcd) did not answer at start, or gave documents that were rejected, and the bootstrap has no listeners to serve meanwhile: not started',
  SY_ERR_NO_ROLLBACK: 'POST /rollback with no previous config to go back to (409)',
  SY_ERR_NOT_READY: 'no generation serves: the admin API answers 503 (GET /ready while starting or shutting down; GET /config, GET /vsets before the first)',
  SY_ERR_API_BAD_REQUEST: 'an admin API request whose body or path cannot be used: empty, not JSON, the wrong shape (400)',
  SY_ERR_API_UNAUTHORIZED: 'an admin API request without the bearer token admin.token asks for (401)',
  SY_ERR_API_FORBIDDEN: 'an admin API request refused as coming from a web page: a Host that does not name the API, a cross-site change (403)',
  SY_ERR_API_NOT_FOUND: 'an admin API path that does not exist (404)',
  SY_ERR_API_NO_COMPONENT: 'POST /components/<name> naming a component the running config does not have, without `kind` to add it (404)',
  SY_ERR_API_NO_ROLLOUT: 'POST /rollouts/<listener>/<action> for a listener with no rollout (404)',
  SY_ERR_API_ROLLOUT_STATE: 'POST /rollouts/<listener>/<action> that the rollout\'s state does not allow (resume when not paused, …), or while a step is being applied (409)',
  SY_ERR_API_METHOD: 'an admin API path that exists, with a method it does not take (405)',
  SY_ERR_API_BODY_TOO_LARGE: 'an admin API request body over 8 MiB (413)',
  SY_ERR_API_CONTENT_TYPE: 'an admin API request body not typed JSON or YAML (415)',
  SY_ERR_INTERNAL: "switchyard's own code failed answering an admin API request (500)",
} as const;

export type ControlCode = keyof typeof ControlCodes;

/** Every stable code switchyard has. */
export type SwitchyardCode = ConfigCode | RuntimeCode | ControlCode;

/** A rejected config, with every issue (each with its own code); thrown by Sidecar.start. */
export class ConfigError extends SwitchyardError {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super('SY_ERR_CONFIG_INVALID', `invalid config:\n${issues.map((i) => '  ' + formatIssue(i)).join('\n')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/**
 * A component failed to come up or to update; says which, and how it was being
 * changed (`mode`, the label of switchyard_component_updates_total).
 */
export class ComponentError extends SwitchyardError {
  readonly component: string;
  readonly mode: 'updated' | 'reinitialized' | 'added';
  constructor(component: string, mode: ComponentError['mode'], message: string, options?: { cause?: unknown }) {
    super(mode === 'updated' ? 'SY_ERR_COMPONENT_UPDATE' : 'SY_ERR_COMPONENT_INIT', message, options);
    this.name = 'ComponentError';
    this.component = component;
    this.mode = mode;
  }
}

/** A second registration of a type name; plugin loading reports it at plugins[i]. */
export class DuplicateTypeError extends SwitchyardError {
  declare readonly code: 'SY_ERR_DUPLICATE_TYPE';
  constructor(kind: 'filter' | 'component', type: string) {
    super('SY_ERR_DUPLICATE_TYPE', `${kind} type "${type}" is already registered`);
    this.name = 'DuplicateTypeError';
  }
}

/**
 * The one error shape of the admin API (Caddy's APIError): the HTTP status, and the
 * body `{code, error}`, or `{code, ...body}` when a body is given (`errors` for an
 * invalid config or a failed build).
 */
export class ApiError extends SwitchyardError {
  readonly status: number;
  readonly body: Readonly<Record<string, unknown>> | undefined;
  constructor(status: number, code: SwitchyardCode, message: string, opts: { body?: Record<string, unknown>; cause?: unknown } = {}) {
    super(code, message, { cause: opts.cause });
    this.name = 'ApiError';
    this.status = status;
    this.body = opts.body;
  }
}
