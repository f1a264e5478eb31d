import type { IncomingMessage } from 'node:http';

/**
 * gRPC as a proxy sees it: a request whose content-type starts with
 * application/grpc, its deadline (grpc-timeout), and its status (grpc-status, in the
 * answer's headers when it is trailers-only, else in its trailers).
 */

/** The canonical status names (as go-grpc-prometheus labels them), by code. */
export const GRPC_CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

export const GRPC_OK = 0;
export const GRPC_CANCELLED = 1;
export const GRPC_UNKNOWN = 2;

/** `retries.on` names of the gRPC codes a retry may follow (Envoy's retry_on grpc conditions). */
export const GRPC_RETRY_ON: Readonly<Record<string, number>> = {
  cancelled: 1, 'deadline-exceeded': 4, 'resource-exhausted': 8, internal: 13, unavailable: 14,
};

const kStatus = Symbol('switchyard.grpcStatus');
type Marked = { [kStatus]?: number };

/** Notes the gRPC status a response carried (from the upstream, or switchyard's own), for the metrics and the log. */
export function markGrpcStatus(res: object, code: number): void {
  (res as Marked)[kStatus] = code;
}

/** The gRPC status a response carried, or -1 when none was seen. */
export function grpcStatusSent(res: object): number {
  return (res as Marked)[kStatus] ?? -1;
}

// hot path
export function isGrpc(req: Pick<IncomingMessage, 'headers'>): boolean {
  const type = req.headers['content-type'];
  return type !== undefined && type.startsWith('application/grpc');
}

/**
 * The gRPC status of an answer switchyard makes itself to a gRPC request (DESIGN.md's
 * mapping; others as gRPC's own HTTP-to-gRPC table says).
 */
export function grpcStatusOf(httpStatus: number): number {
  switch (httpStatus) {
    case 502: case 503: return 14; // UNAVAILABLE
    case 504: case 408: return 4; // DEADLINE_EXCEEDED
    case 429: return 8; // RESOURCE_EXHAUSTED
    case 500: case 400: case 431: case 413: case 505: return 13; // INTERNAL
    case 401: return 16; // UNAUTHENTICATED
    case 403: return 7; // PERMISSION_DENIED
    case 404: case 405: case 501: return 12; // UNIMPLEMENTED
    case 499: return 1; // CANCELLED
    default: return GRPC_UNKNOWN;
  }
}

/** The name a metric or the access log shows for a code. */
export function grpcCodeName(code: number): string {
  return GRPC_CODES[code] ?? String(code);
}

/** A grpc-status value as a code, or -1 when it is not one. */
export function parseGrpcStatus(value: string | undefined): number {
  if (value === undefined || !/^[0-9]{1,2}$/.test(value)) return -1;
  return Number(value);
}

/** grpc-message is percent-encoded (gRPC over HTTP/2: "Percent-Encoded"): what is not printable ASCII, and %. */
export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text.trim())) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const TIMEOUT_UNITS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };

/** grpc-timeout (`1..8 digits` then a unit: H M S m u n) in milliseconds, or null when absent or malformed. */
export function parseGrpcTimeout(value: string | undefined): number | null {
  if (value === undefined) return null;
  const m = /^([0-9]{1,8})([HMSmun])$/.exec(value);
  if (m === null) return null;
  return Math.max(1, Math.ceil(Number(m[1]) * TIMEOUT_UNITS[m[2]!]!));
}
