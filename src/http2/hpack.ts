/**
 * HPACK (RFC 7541) for the HTTP/2 upstream client: a decoder for the field blocks
 * an upstream sends (its dynamic table, Huffman-coded strings, size updates), and an
 * encoder for the requests switchyard sends. The encoder indexes nothing (literals
 * "without indexing", names from the static table where they are in it): the
 * upstream keeps no state for us, and no table size update is ever owed.
 */

/** RFC 7541 Appendix A. */
const STATIC: readonly (readonly [string, string])[] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''],
  ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''],
  ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''],
  ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''], ['proxy-authorization', ''], ['range', ''],
  ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''], ['set-cookie', ''],
  ['strict-transport-security', ''], ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''],
  ['www-authenticate', ''],
];

/** A static table index by name (its first entry), and by name and value. */
const STATIC_NAME = new Map<string, number>();
const STATIC_PAIR = new Map<string, number>();
STATIC.forEach(([name, value], i) => {
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
  if (value !== '') STATIC_PAIR.set(`${name}\0${value}`, i + 1);
});

/**
 * The Huffman code's lengths, symbol by symbol (0–255, then EOS), RFC 7541
 * Appendix B. The code is canonical (codes of one length are consecutive, in symbol
 * order), so the lengths give it whole.
 */
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];
const EOS = 256;

/** Canonical decoding: per length, the first code, how many codes, and where their symbols start in SYMBOLS. */
const FIRST = new Int32Array(31);
const COUNT = new Int32Array(31);
const OFFSET = new Int32Array(31);
const SYMBOLS = new Uint16Array(257);
{
  const bySize = [...HUFFMAN_LENGTHS.keys()].sort((a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b);
  bySize.forEach((s, i) => { SYMBOLS[i] = s; });
  for (const n of HUFFMAN_LENGTHS) COUNT[n]!++;
  let code = 0;
  let offset = 0;
  for (let n = 1; n <= 30; n++) {
    FIRST[n] = code;
    OFFSET[n] = offset;
    code = (code + COUNT[n]!) << 1;
    offset += COUNT[n]!;
  }
}

/** A field block that breaks HPACK's rules: a COMPRESSION_ERROR of the connection (RFC 9113 §4.3). */
export class CompressionError extends Error {
  constructor(message: string) {
    super(`HPACK: ${message}`);
    this.name = 'CompressionError';
  }
}

function huffmanDecode(buf: Buffer, from: number, to: number): string {
  let out = '';
  let code = 0;
  let n = 0;
  for (let i = from; i < to; i++) {
    const byte = buf[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      code = (code << 1) | ((byte >> bit) & 1);
      n++;
      const k = code - FIRST[n]!;
      if (k >= 0 && k < COUNT[n]!) {
        const sym = SYMBOLS[OFFSET[n]! + k]!;
        if (sym === EOS) throw new CompressionError('EOS in a Huffman-coded string');
        out += String.fromCharCode(sym);
        code = 0;
        n = 0;
      } else if (n > 30) throw new CompressionError('an invalid Huffman code');
    }
  }
  // What is left is padding: fewer than 8 bits, all ones (the start of EOS).
  if (n > 7 || code !== (1 << n) - 1) throw new CompressionError('invalid Huffman padding');
  return out;
}

/** Decodes the field blocks of one connection, in order: its dynamic table lives across them. */
export class HpackDecoder {
  readonly #table: [string, string][] = [];
  #size = 0;
  /** What our SETTINGS_HEADER_TABLE_SIZE allows (the default, 4,096). */
  readonly #limit: number;
  #max: number;
  #pos = 0;

  constructor(limit = 4096) {
    this.#limit = limit;
    this.#max = limit;
  }

  /**
   * The fields of one whole block, as name, value, … in the order they came (strings
   * hold the bytes as latin1: one character a byte, which is also how entries are
   * sized). Null when they come to more than `maxList` bytes as RFC 9113 counts a
   * header list (32 more a field): a small block of references to big entries cannot
   * make a huge list, and the block is still read to its end, so that the table stays
   * as the upstream has it.
   */
  decode(block: Buffer, maxList = Infinity): string[] | null {
    const out: string[] = [];
    this.#pos = 0;
    let first = true;
    let listSize = 0;
    while (this.#pos < block.length) {
      const b = block[this.#pos]!;
      let name: string;
      let value: string;
      if (b & 0x80) {
        [name, value] = this.#entry(this.#int(block, 7));
      } else if (b & 0x40) {
        name = this.#name(block, 6);
        value = this.#string(block);
        this.#add(name, value);
      } else if (b & 0x20) {
        // A size update comes first in a block (RFC 7541 §4.2).
        if (!first) throw new CompressionError('a table size update after a field');
        const size = this.#int(block, 5);
        if (size > this.#limit) throw new CompressionError(`a table size of ${size}, above the ${this.#limit} allowed`);
        this.#max = size;
        this.#evict(0);
        continue;
      } else {
        // Without indexing (0000) or never indexed (0001): a 4-bit prefix.
        name = this.#name(block, 4);
        value = this.#string(block);
      }
      first = false;
      listSize += 32 + name.length + value.length;
      if (listSize <= maxList) out.push(name, value);
    }
    return listSize <= maxList ? out : null;
  }

  #entry(index: number): readonly [string, string] {
    if (index === 0) throw new CompressionError('index 0');
    if (index <= STATIC.length) return STATIC[index - 1]!;
    const e = this.#table[index - STATIC.length - 1];
    if (e === undefined) throw new CompressionError(`index ${index} beyond the tables`);
    return e;
  }

  #name(block: Buffer, prefix: number): string {
    const index = this.#int(block, prefix);
    return index === 0 ? this.#string(block) : this.#entry(index)[0];
  }

  #add(name: string, value: string): void {
    const size = 32 + name.length + value.length;
    this.#evict(size);
    // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
    if (size > this.#max) return;
    this.#table.unshift([name, value]);
    this.#size += size;
  }

  #evict(room: number): void {
    while (this.#size + room > this.#max && this.#table.length > 0) {
      const [name, value] = this.#table.pop()!;
      this.#size -= 32 + name.length + value.length;
    }
  }

  #int(block: Buffer, prefix: number): number {
    const mask = (1 << prefix) - 1;
    let v = block[this.#pos++]! & mask;
    if (v < mask) return v;
    let shift = 0;
    for (;;) {
      if (this.#pos >= block.length) throw new CompressionError('a truncated integer');
      const b = block[this.#pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
      if (shift > 28) throw new CompressionError('an integer too large');
    }
    return v;
  }

  #string(block: Buffer): string {
    if (this.#pos >= block.length) throw new CompressionError('a truncated string');
    const huffman = (block[this.#pos]! & 0x80) !== 0;
    const length = this.#int(block, 7);
    const from = this.#pos;
    const to = from + length;
    if (to > block.length) throw new CompressionError('a string beyond its block');
    this.#pos = to;
    return huffman ? huffmanDecode(block, from, to) : block.toString('latin1', from, to);
  }
}

/** An integer with an N-bit prefix, the prefix's other bits `flags`, appended to `out`. */
function putInt(out: number[], flags: number, prefix: number, v: number): void {
  const mask = (1 << prefix) - 1;
  if (v < mask) {
    out.push(flags | v);
    return;
  }
  out.push(flags | mask);
  v -= mask;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

function putString(out: number[], s: string): void {
  putInt(out, 0, 7, s.length);
  for (let i = 0; i < s.length; i++) out.push(s.charCodeAt(i) & 0xff);
}

/**
 * The field block of a request: name, value, … (names in lower case, values as
 * latin1 bytes). Pairs in the static table are indexed; others are literals without
 * indexing, their names from the static table where it has them.
 */
export function encodeFields(fields: readonly string[]): Buffer {
  const out: number[] = [];
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    const pair = STATIC_PAIR.get(`${name}\0${value}`);
    if (pair !== undefined) {
      putInt(out, 0x80, 7, pair);
      continue;
    }
    const index = STATIC_NAME.get(name);
    if (index !== undefined) putInt(out, 0, 4, index);
    else {
      out.push(0);
      putString(out, name);
    }
    putString(out, value);
  }
  return Buffer.from(out);
}
