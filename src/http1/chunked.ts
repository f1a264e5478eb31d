import { MalformedMessage, isFieldValue, isToken } from './message_head.js';

/**
 * The chunked transfer coding (RFC 9112 §7.1), both ways: a decoder that reads it
 * incrementally and strictly (what parsers could read differently is refused: a
 * size with a sign, a prefix or more than 16 hex digits, a bare CR or LF, a chunk
 * not followed by CRLF, control characters in an extension or a trailer), and the
 * framing to write a body in it.
 */

const enum State { Size, Ext, SizeLf, Data, DataCr, DataLf, Trailer, TrailerLf, Done }

/** Chunk extensions and trailers together may take this much of a chunk line or the trailer section. */
const MAX_LINE = 16 * 1024;

// Hex digit values, -1 for anything else.
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) HEX[65 + c] = HEX[97 + c] = 10 + c;

export class ChunkedDecoder {
  #state = State.Size;
  /** Hex digits read of the size. */
  #digits = 0;
  /** Whitespace may come between a chunk's size and its extension (an answer's body; a request's may not). */
  readonly #bws: boolean;
  /** A size digit was read (a zero counts: it is the last chunk's size). */
  #sized = false;
  #size = 0;
  #remaining = 0;
  /** The chunk extension, or the trailer line, being read (latin1), bounded by MAX_LINE. */
  #line = '';
  #lineBytes = 0;
  /** Trailer fields: name, value, … */
  readonly trailers: string[] = [];

  constructor(options: { whitespaceBeforeExtension: boolean } = { whitespaceBeforeExtension: true }) {
    this.#bws = options.whitespaceBeforeExtension;
  }

  get done(): boolean {
    return this.#state === State.Done;
  }

  // hot path
  /**
   * Reads `buf` from `from`, handing each piece of chunk data to `onData` (slices of
   * `buf`). Returns where the message ended in `buf` (after the trailer section), or
   * -1 when it needs more. Throws MalformedMessage.
   */
  feed(buf: Buffer, from: number, onData: (data: Buffer) => void): number {
    let i = from;
    const n = buf.length;
    while (i < n) {
      switch (this.#state) {
        case State.Size: {
          const c = buf[i]!;
          const h = HEX[c]!;
          if (h >= 0) {
            // Leading zeros are digits of no weight (Node reads them too); 2^53 bounds the rest.
            this.#sized = true;
            if ((this.#size > 0 || h > 0) && ++this.#digits > 16) throw new MalformedMessage('a chunk size of more than 16 hex digits');
            this.#size = this.#size * 16 + h;
            if (this.#size > Number.MAX_SAFE_INTEGER) throw new MalformedMessage('a chunk size beyond 2^53');
            i++;
            break;
          }
          if (!this.#sized) throw new MalformedMessage('a chunk line that does not start with a hex size');
          if (c === 13) this.#state = State.SizeLf;
          // Whitespace before an extension (BWS, RFC 9112 §7.1.1) only where the decoder allows it:
          // Node's parser refuses it in requests, and a proxy must not read what the server behind it may not.
          else if (c === 59 /* ; */ || (this.#bws && (c === 32 || c === 9))) {
            this.#state = State.Ext;
            this.#line = '';
            this.#lineBytes = 0;
            continue; // the extension reader takes this byte
          } else throw new MalformedMessage('a chunk size followed by something other than an extension or CRLF');
          i++;
          break;
        }
        case State.Ext: {
          i = this.#lineTo(buf, i, 'chunk extensions');
          if (i === n) break;
          checkExtension(this.#line);
          this.#state = State.SizeLf;
          i++;
          break;
        }
        case State.SizeLf: {
          if (buf[i] !== 10) throw new MalformedMessage('a bare CR in a chunk line');
          i++;
          this.#digits = 0;
          this.#sized = false;
          if (this.#size === 0) {
            this.#state = State.Trailer;
            this.#line = '';
            this.#lineBytes = 0;
          } else {
            this.#remaining = this.#size;
            this.#state = State.Data;
          }
          this.#size = 0;
          break;
        }
        case State.Data: {
          const take = Math.min(this.#remaining, n - i);
          onData(buf.subarray(i, i + take));
          i += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = State.DataCr;
          break;
        }
        case State.DataCr:
          if (buf[i] !== 13) throw new MalformedMessage('chunk data longer than its size (no CRLF after it)');
          this.#state = State.DataLf;
          i++;
          break;
        case State.DataLf:
          if (buf[i] !== 10) throw new MalformedMessage('a bare CR after chunk data');
          this.#state = State.Size;
          i++;
          break;
        case State.Trailer: {
          i = this.#lineTo(buf, i, 'trailers');
          if (i === n) break;
          this.#state = State.TrailerLf;
          i++;
          break;
        }
        case State.TrailerLf: {
          if (buf[i] !== 10) throw new MalformedMessage('a bare CR in the trailers');
          i++;
          const line = this.#line;
          if (line === '') {
            this.#state = State.Done;
            return i;
          }
          this.#trailer(line);
          this.#line = '';
          this.#state = State.Trailer;
          break;
        }
        case State.Done:
          return i;
      }
    }
    return -1;
  }

  /**
   * Adds `buf` from `i` up to the next CR to the line being read, within MAX_LINE
   * (for `what`: the extensions of one chunk, or the whole trailer section); returns
   * where the CR is, or the end of `buf` when it has not come yet.
   */
  #lineTo(buf: Buffer, i: number, what: string): number {
    const cr = buf.indexOf(13, i);
    const end = cr === -1 ? buf.length : cr;
    const lf = buf.indexOf(10, i);
    if (lf !== -1 && lf < end) throw new MalformedMessage(`a bare LF in the ${what}`);
    this.#lineBytes += end - i;
    if (this.#lineBytes > MAX_LINE) throw new MalformedMessage(`${what} over 16 KiB`, 413);
    this.#line += buf.toString('latin1', i, end);
    return end;
  }

  #trailer(line: string): void {
    const colon = line.indexOf(':');
    const name = colon === -1 ? '' : line.slice(0, colon);
    if (!isToken(name)) throw new MalformedMessage('a trailer line that is not "name: value" (obs-fold, a bare LF?)');
    const value = line.slice(colon + 1).trim();
    if (!isFieldValue(value)) throw new MalformedMessage(`trailer ${name} has a control character in its value`);
    this.trailers.push(name, value);
  }
}

/**
 * chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
 * Read only to be checked: extensions are dropped, never forwarded.
 */
function checkExtension(ext: string): void {
  const bad = (): never => { throw new MalformedMessage('a malformed chunk extension'); };
  let i = 0;
  const ws = (): void => { while (ext.charCodeAt(i) === 32 || ext.charCodeAt(i) === 9) i++; };
  const token = (): void => {
    const s = i;
    while (i < ext.length && isToken(ext[i]!)) i++;
    if (i === s) bad();
  };
  ws();
  if (i === ext.length) bad(); // spaces after the size and nothing else
  while (i < ext.length) {
    if (ext[i] !== ';') bad();
    i++;
    ws();
    token();
    ws();
    if (ext[i] === '=') {
      i++;
      ws();
      if (ext[i] === '"') {
        i++;
        for (;;) {
          if (i >= ext.length) bad();
          const c = ext.charCodeAt(i);
          if (c === 34) break;
          if (c === 92) {
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            i++;
            const q = ext.charCodeAt(i);
            if (Number.isNaN(q) || (q < 0x20 && q !== 9) || q === 0x7f) bad();
          } else if ((c < 0x20 && c !== 9) || c === 0x7f) bad();
          i++;
        }
        i++;
      } else token();
      ws();
    }
  }
}

/** The framing in front of one chunk of `length` bytes. */
export function chunkHead(length: number): string {
  return `${length.toString(16)}\r\n`;
}

/** The last chunk, no trailers. */
export const LAST_CHUNK = '0\r\n\r\n';

/** The last chunk with trailer fields (name, value, …); a field that is not a token and a field value is left out. */
export function lastChunk(trailers: readonly string[]): string {
  let out = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) {
    const name = trailers[i]!;
    const value = trailers[i + 1]!;
    if (isToken(name) && isFieldValue(value)) out += `${name}: ${value}\r\n`;
  }
  return `${out}\r\n`;
}
