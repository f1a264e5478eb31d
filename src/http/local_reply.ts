import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { HeaderEdit } from '../filters/api.js';
import { applyHeaderEdits, type HeaderVariables } from './header_edits.js';
import { encodeGrpcMessage, grpcStatusOf, isGrpc, markGrpcStatus } from '../http2/grpc.js';
import { H2Response } from '../http2/h2_compat.js';

/**
 * Answers switchyard makes itself (a filter's 429, a 502, the parser's 400), on a
 * response object or raw on a socket that left Node's parser (upgrades, CONNECT):
 * short plain text, the listener's response edits applied last.
 */

/** Response header edits with the values their templates read. */
export interface EditsFor {
  readonly list: readonly HeaderEdit[] | null;
  readonly vars: HeaderVariables;
}

/**
 * A short plain-text answer on `res`. `headers` come after (and so may override) the
 * content type; edits apply last. When Node refuses a header (one a plugin's filter
 * or edit made), the answer still goes, without them. Nothing happens on a response
 * that already started or was destroyed.
 */
export function sendText(res: ServerResponse, status: number, text: string, headers?: Record<string, string>, edits?: EditsFor): void {
  if (res.headersSent || res.destroyed) return;
  const write = res.req !== undefined && isGrpc(res.req) ? writeGrpcError : writeText;
  try {
    write(res, status, text, headers, edits);
  } catch (err) {
    if (res.headersSent) throw err;
    write(res, status, text);
  }
}

/**
 * The same answer to a gRPC request: a gRPC error in trailers-only form (status 200,
 * grpc-status from the HTTP status by DESIGN.md's mapping, the text as grpc-message),
 * so that a gRPC client reports it as the call's status rather than a protocol error.
 * On HTTP/1.1, where there is no trailers-only form, the status fields are headers.
 */
function writeGrpcError(res: ServerResponse, status: number, text: string, headers?: Record<string, string>, edits?: EditsFor): void {
  const code = grpcStatusOf(status);
  let flat: string[] = ['content-type', 'application/grpc', 'grpc-status', String(code), 'grpc-message', encodeGrpcMessage(text)];
  if (headers !== undefined) for (const name in headers) if (name !== 'content-type') flat.push(name, headers[name]!);
  if (edits !== undefined && edits.list !== null) flat = applyHeaderEdits(flat, edits.list, edits.vars);
  markGrpcStatus(res, code);
  if ((res as object) instanceof H2Response) {
    (res as unknown as H2Response).respondTrailersOnly(200, flat);
    return;
  }
  res.writeHead(200, [...flat, 'content-length', '0']);
  res.end();
}

function writeText(res: ServerResponse, status: number, text: string, headers?: Record<string, string>, edits?: EditsFor): void {
  let flat: string[] = ['content-type', 'text/plain; charset=utf-8'];
  if (headers !== undefined) {
    for (const name in headers) {
      if (name === 'content-type') flat[1] = headers[name]!;
      else flat.push(name, headers[name]!);
    }
  }
  if (edits !== undefined && edits.list !== null) flat = applyHeaderEdits(flat, edits.list, edits.vars);
  flat.push('content-length', String(Buffer.byteLength(text)));
  res.writeHead(status, flat);
  res.end(text);
}

/**
 * An answer written raw on a socket that has no response object (an upgrade's, a
 * CONNECT's): the head in latin1, as Node writes heads, the text in UTF-8, and
 * `connection: close` (the socket is ended after it). `text` null: no body and no
 * content type (a 405 to CONNECT).
 */
export function rawAnswer(status: number, text: string | null, headers?: Record<string, string>, edits?: EditsFor): Buffer {
  let list: string[] = [];
  if (text !== null) list.push('content-type', 'text/plain; charset=utf-8');
  if (headers !== undefined) for (const name in headers) list.push(name, headers[name]!);
  if (edits !== undefined && edits.list !== null) list = applyHeaderEdits(list, edits.list, edits.vars);
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-length: ${text === null ? 0 : Buffer.byteLength(text)}\r\nconnection: close\r\n`;
  for (let i = 0; i < list.length; i += 2) head += `${list[i]}: ${list[i + 1]}\r\n`;
  const out = Buffer.from(`${head}\r\n`, 'latin1');
  return text === null || text === '' ? out : Buffer.concat([out, Buffer.from(text)]);
}

/** Response edits as header lines (CRLF after each, for latin1) of a head written raw; '' when none. */
export function editLines(edits: EditsFor): string {
  if (edits.list === null) return '';
  const list = applyHeaderEdits([], edits.list, edits.vars);
  let out = '';
  for (let i = 0; i < list.length; i += 2) out += `${list[i]}: ${list[i + 1]}\r\n`;
  return out;
}
