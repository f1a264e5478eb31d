/** A body chunk as a response's end() takes it. */
export type EndChunk = string | Uint8Array | (() => void) | undefined;

/**
 * end()'s arguments as Node's ServerResponse reads them: `(chunk?, encoding?, cb?)`,
 * where a function in the first or second place is the callback.
 */
export function endArgs(chunk: EndChunk, encoding: BufferEncoding | (() => void) | undefined, cb: (() => void) | undefined):
  [string | Uint8Array | undefined, BufferEncoding | undefined, (() => void) | undefined] {
  if (typeof chunk === 'function') return [undefined, undefined, chunk];
  if (typeof encoding === 'function') return [chunk, undefined, encoding];
  return [chunk, encoding, cb];
}
