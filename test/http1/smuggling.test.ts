// Issue 13, "no request smuggling", the request side: every case of the corpus goes
// through one switchyard listener to a raw TCP upstream that frames what it gets
// with a strict reference framing of its own, and through a plain Node http.Server
// for the differential. The corpus says what must happen in bytes, so it runs
// unchanged against switchyard's own HTTP/1.1 parser when that replaces Node's.
import test from 'ava';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { oneRole, scrape, startSidecar, uniqueHost, within } from '../helpers.js';
import { CORPUS, caseOf, sentinel, type Case, type Seen } from './corpus.js';

/** How many cases run at once (each on connections of its own). */
const CONCURRENCY = 32;
/** The longest a case may take to end (its connection closed by the proxy). */
const CASE_MS = 5_000;
const UPSTREAM_BODY = 'ok';
const UPSTREAM_ANSWER = `HTTP/1.1 200 OK\r\ncontent-length: ${UPSTREAM_BODY.length}\r\n\r\n${UPSTREAM_BODY}`;

// ---------------------------------------------------------------- the reference upstream

/** A request the upstream framed whole. */
interface Framed { method: string; target: string; host: string | undefined; body: string }

const TCHAR = "!#$%&'*+.^_`|~0-9A-Za-z-";
const REQUEST_LINE = new RegExp(`^([${TCHAR}]+) ([\\x21-\\xff]+) HTTP/1\\.1$`);
const FIELD_LINE = new RegExp(`^([${TCHAR}]+):[ \\t]*([^\\x00-\\x08\\x0a-\\x1f\\x7f]*?)[ \\t]*$`);
const CHUNK_LINE = /^([0-9A-Fa-f]+)(?:;[^\r\n]*)?$/;

/**
 * The upstream's framing of one connection's bytes: RFC 9112 with nothing lenient
 * (CRLF only, no obs-fold, one Content-Length of digits or Transfer-Encoding exactly
 * `chunked`, never both), so a request undici sends in any way a next hop could read
 * differently shows up as a framing error.
 */
class ReferenceFraming {
  #buf = '';
  /** The head of a request whose body has not all come yet. */
  pending: { target: string; host: string | undefined } | null = null;

  /** Takes bytes; returns the requests they complete, or throws on bytes that do not frame. */
  push(bytes: string): Framed[] {
    this.#buf += bytes;
    const out: Framed[] = [];
    for (;;) {
      const end = this.#buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.#buf.length > 256 * 1024) throw new Error('a head of more than 256 KiB');
        return out;
      }
      const lines = this.#buf.slice(0, end).split('\r\n');
      const line = REQUEST_LINE.exec(lines[0]!);
      if (!line) throw new Error(`not a request line: ${JSON.stringify(lines[0])}`);
      const fields: [string, string][] = [];
      for (const l of lines.slice(1)) {
        const f = FIELD_LINE.exec(l);
        if (!f || /[\r\n]/.test(l)) throw new Error(`not a field line: ${JSON.stringify(l)}`);
        fields.push([f[1]!.toLowerCase(), f[2]!]);
      }
      const values = (name: string): string[] => fields.filter(([n]) => n === name).map(([, v]) => v);
      const hosts = values('host');
      if (hosts.length > 1) throw new Error('two Host lines');
      this.pending = { target: line[2]!, host: hosts[0] };
      const te = values('transfer-encoding');
      const cl = values('content-length');
      let at = end + 4;
      let body: string | null;
      if (te.length > 0) {
        if (cl.length > 0) throw new Error('Content-Length and Transfer-Encoding');
        if (te.length !== 1 || te[0] !== 'chunked') throw new Error(`Transfer-Encoding: ${te.join(', ')}`);
        const chunked = this.#chunked(at);
        if (chunked === null) return out;
        [body, at] = chunked;
      } else if (cl.length > 0) {
        if (cl.length !== 1 || !/^\d+$/.test(cl[0]!)) throw new Error(`Content-Length: ${cl.join(', ')}`);
        const n = Number(cl[0]);
        if (this.#buf.length < at + n) return out;
        body = this.#buf.slice(at, at + n);
        at += n;
      } else body = '';
      out.push({ method: line[1]!, target: line[2]!, host: hosts[0], body });
      this.pending = null;
      this.#buf = this.#buf.slice(at);
    }
  }

  /** A chunked body from `at`: its content and where it ends, or null while incomplete. */
  #chunked(at: number): [string, number] | null {
    const buf = this.#buf;
    let body = '';
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol < 0) return null;
      const m = CHUNK_LINE.exec(buf.slice(at, eol));
      if (!m) throw new Error(`not a chunk line: ${JSON.stringify(buf.slice(at, eol))}`);
      const size = parseInt(m[1]!, 16);
      at = eol + 2;
      if (size === 0) {
        for (;;) {
          const t = buf.indexOf('\r\n', at);
          if (t < 0) return null;
          if (t === at) return [body, at + 2];
          if (!FIELD_LINE.test(buf.slice(at, t))) throw new Error(`not a trailer line: ${JSON.stringify(buf.slice(at, t))}`);
          at = t + 2;
        }
      }
      if (buf.length < at + size + 2) return null;
      if (buf.slice(at + size, at + size + 2) !== '\r\n') throw new Error('no CRLF after chunk data');
      body += buf.slice(at, at + size);
      at += size + 2;
    }
  }
}

/** What the upstream saw over the whole run. */
const upstream = {
  framed: [] as Framed[],
  /** Requests cut before they were whole (their connection closed). */
  partial: [] as { target: string; host: string | undefined }[],
  /** Bytes that did not frame: never expected. */
  errors: [] as string[],
};

async function startReferenceUpstream(): Promise<{ address: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    const framing = new ReferenceFraming();
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      try {
        for (const r of framing.push(d)) {
          upstream.framed.push(r);
          s.write(UPSTREAM_ANSWER, 'latin1');
        }
      } catch (err) {
        upstream.errors.push(`${(err as Error).message} in ${JSON.stringify(d.slice(0, 300))}`);
        s.destroy();
      }
    });
    s.on('close', () => {
      sockets.delete(s);
      if (framing.pending !== null) upstream.partial.push(framing.pending);
    });
    s.on('error', () => {});
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    address: `${host}:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

// ---------------------------------------------------------------- Node's own parser, for the differential

/** What a plain Node http.Server made of a case's bytes. */
interface NodeVerdict { requests: { method: string; target: string; body: string }[]; error: string | null }

/**
 * A plain http.Server with Node's defaults (16 KiB heads), but for its Host check, a
 * server's policy rather than its parser's (switchyard has its own). Each case's
 * connection is told apart by the client's port.
 */
async function startNodeReference(): Promise<{ verdict(bytes: string): Promise<NodeVerdict>; close(): Promise<void> }> {
  const byPort = new Map<number, { v: NodeVerdict; done: () => void }>();
  const server = createServer({ requireHostHeader: false }, (req: IncomingMessage, res) => {
    const entry = byPort.get(req.socket.remotePort!);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      entry?.v.requests.push({ method: req.method!, target: originForm(req.url!), body: Buffer.concat(chunks).toString('latin1') });
      res.end('ok');
    });
    req.on('error', () => {});
    res.on('error', () => {});
  });
  server.on('connection', (s: Socket) => {
    const port = s.remotePort!;
    s.on('close', () => byPort.get(port)?.done());
  });
  server.on('clientError', (err: NodeJS.ErrnoException, s: Socket) => {
    const entry = byPort.get(s.remotePort!);
    if (entry && entry.v.error === null) entry.v.error = err.code ?? err.message;
    s.destroy();
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  const { port } = server.address() as AddressInfo;
  return {
    async verdict(bytes: string): Promise<NodeVerdict> {
      const v: NodeVerdict = { requests: [], error: null };
      const socket = connect({ host, port });
      socket.on('error', () => {});
      socket.resume();
      await new Promise<void>((r) => socket.once('connect', r));
      const closed = new Promise<void>((done) => byPort.set(socket.localPort!, { v, done }));
      socket.end(bytes, 'latin1');
      await within(closed, CASE_MS, `Node's server to close the connection for ${JSON.stringify(bytes.slice(0, 80))}`)
        .finally(() => { socket.destroy(); byPort.delete(socket.localPort!); });
      return v;
    },
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** The origin-form a proxy sends an absolute-form target in (the path and query as written; `/` when empty). */
function originForm(target: string): string {
  const m = /^https?:\/\/[^/?#]*/i.exec(target);
  if (!m) return target;
  const rest = target.slice(m[0].length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}

// ---------------------------------------------------------------- the client side

interface Answer { status: number; body: string }

/** The answers in a connection's bytes, 1xx left out; `complete` is false when the last one is cut short. */
function parseAnswers(text: string): { answers: Answer[]; complete: boolean } {
  const answers: Answer[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) return { answers, complete: false };
    const lines = text.slice(at, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? NaN);
    const length = lines.slice(1).map((l) => /^content-length:\s*(\d+)\s*$/i.exec(l)).find(Boolean)?.[1];
    at = end + 4;
    if (status >= 100 && status < 200) continue;
    if (length === undefined) {
      answers.push({ status, body: text.slice(at) });
      return { answers, complete: true };
    }
    if (text.length < at + Number(length)) return { answers, complete: false };
    answers.push({ status, body: text.slice(at, at + Number(length)) });
    at += Number(length);
  }
  return { answers, complete: true };
}

/** What the client got for a case: the answers, and whether the proxy closed the connection in time. */
interface ClientResult { answers: Answer[]; closed: boolean; raw: string }

/** Sends a case in one write; on a `keep` case, the sentinel request once every forwarded request is answered. */
function runCase(sc: Sidecar, c: Case, id: number): Promise<ClientResult> {
  const a = sc.addresses().get('web')!;
  return new Promise((resolve) => {
    let raw = '';
    let sent = false;
    const socket = connect({ host: a.host, port: a.port }, () => socket.write(c.bytes, 'latin1'));
    socket.setEncoding('latin1');
    socket.on('error', () => {});
    socket.on('data', (d: string) => {
      raw += d;
      if (c.end !== 'keep' || sent) return;
      const { answers, complete } = parseAnswers(raw);
      if (complete && answers.length >= c.forward.length) {
        sent = true;
        socket.write(sentinel(id).bytes, 'latin1');
      }
    });
    const timer = setTimeout(() => { socket.destroy(); resolve({ answers: parseAnswers(raw).answers, closed: false, raw }); }, CASE_MS);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ answers: parseAnswers(raw).answers, closed: true, raw });
    });
  });
}

/** Runs `work` over `items`, at most `n` at a time. */
async function pool<T>(items: readonly T[], n: number, work: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      await work(items[i]!, i);
    }
  }));
}

// ---------------------------------------------------------------- the run: every case once, before the assertions

const cleanups: (() => Promise<void> | void)[] = [];
const client = new Map<number, ClientResult>();
const node = new Map<number, NodeVerdict>();
let sidecar: Sidecar;

test.before(async () => {
  const up = await startReferenceUpstream();
  cleanups.push(() => up.close());
  const reference = await startNodeReference();
  cleanups.push(() => reference.close());
  sidecar = await startSidecar({ teardown: (fn) => { cleanups.push(fn); } }, oneRole(up.address));
  await pool(CORPUS, CONCURRENCY, async (c, id) => {
    const [mine, theirs] = await Promise.all([runCase(sidecar, c, id), reference.verdict(c.bytes)]);
    client.set(id, mine);
    node.set(id, theirs);
  });
});

test.after.always(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

/** The upstream's requests from case `id`, in the order it got them. */
function seenFrom(id: number): Framed[] {
  return upstream.framed.filter((r) => caseOf(r.target, r.host) === id);
}

/**
 * What the upstream got, as the expected Seen list says it (the host only where the
 * case names one), both in one order: pipelined requests are forwarded at once, over
 * connections of their own, so they may reach the upstream in any order (a body read
 * whole first goes later); their answers still reach the client in its order.
 */
function sideBySide(got: Framed[], want: Seen[]): { got: Seen[]; want: Seen[] } {
  const key = (r: { method: string; target: string; body: string }): string => `${r.target} ${r.method} ${r.body}`;
  const sorted = [...want].sort((a, b) => key(a).localeCompare(key(b)));
  const seen = [...got].sort((a, b) => key(a).localeCompare(key(b)))
    .map((r, i) => ({ method: r.method, target: r.target, body: r.body, ...(sorted[i]?.host !== undefined ? { host: r.host ?? '(none)' } : {}) }));
  return { got: seen, want: sorted };
}

/** What a case must come to, and what it came to, side by side. */
function outcome(c: Case, id: number): { want: unknown; got: unknown } {
  const res = client.get(id)!;
  const keep = c.end === 'keep';
  const forwarded = keep ? [...c.forward, sentinel(id).seen] : c.forward;
  const statuses = [...forwarded.map(() => 200), ...(typeof c.end === 'number' ? [c.end] : [])];
  const seen = sideBySide(seenFrom(id), forwarded);
  const cut = upstream.partial.filter((r) => caseOf(r.target, r.host) === id).length;
  return {
    want: { statuses, upstream: seen.want, closed: true, relayed: forwarded.map(() => UPSTREAM_BODY), cutUpstream: c.partial ? Math.min(cut, 1) : 0 },
    got: {
      statuses: res.answers.map((a) => a.status),
      upstream: seen.got,
      closed: res.closed,
      relayed: res.answers.filter((a) => a.status === 200).map((a) => a.body),
      cutUpstream: cut,
    },
  };
}

const families = [...new Set(CORPUS.map((c) => c.name.split('/')[0]!))];

test('the corpus has at least 300 cases, every name once', (t) => {
  t.true(CORPUS.length >= 300, `${CORPUS.length} cases`);
  t.is(new Set(CORPUS.map((c) => c.name)).size, CORPUS.length);
});

for (const family of families) {
  test(`${family}: each case is forwarded as the client framed it, or refused and closed with nothing upstream`, (t) => {
    for (const [id, c] of CORPUS.entries()) {
      if (!c.name.startsWith(`${family}/`)) continue;
      const { want, got } = outcome(c, id);
      t.deepEqual(got, want, `${c.name} (c${id}) ${JSON.stringify(c.bytes.length > 400 ? `${c.bytes.slice(0, 400)}…` : c.bytes)}\n  got: ${JSON.stringify(client.get(id)!.raw.slice(0, 600))}`);
    }
  });
}

test('differential: whatever Node\'s own parser refuses, switchyard refuses too, and it forwards nothing Node did not parse', (t) => {
  for (const [id, c] of CORPUS.entries()) {
    const theirs = node.get(id)!;
    // In the client's order: the upstream may get pipelined requests in any order (sideBySide).
    const forwarded = seenFrom(id).filter((r) => r.target !== sentinel(id).seen.target).map((r) => ({ method: r.method, target: r.target, body: r.body }));
    const key = (r: { method: string; target: string; body: string }): string => `${r.target} ${r.method} ${r.body}`;
    const prefix = theirs.requests.slice(0, forwarded.length);
    t.deepEqual(forwarded.map(key).sort(), prefix.map(key).sort(), `${c.name} (c${id}): a request Node's parser did not read that way (Node: ${JSON.stringify(theirs)})`);
    if (theirs.error === null) continue;
    t.false(seenFrom(id).some((r) => r.target === sentinel(id).seen.target), `${c.name} (c${id}): Node refused (${theirs.error}) where switchyard kept the connection`);
    // Bytes after an HTTP/1.0 or `Connection: close` request are not processed: closing is the refusal (RFC 9112 §9.6).
    if (theirs.error !== 'HPE_CLOSED_CONNECTION') {
      t.true(client.get(id)!.answers.some((a) => a.status >= 400), `${c.name} (c${id}): Node refused it (${theirs.error}), switchyard answered ${JSON.stringify(client.get(id)!.answers.map((a) => a.status))}`);
    }
  }
});

test('the upstream got no request that no case sent, and nothing it could not frame', (t) => {
  t.deepEqual(upstream.errors, []);
  t.deepEqual(upstream.framed.filter((r) => caseOf(r.target, r.host) < 0), []);
  t.deepEqual(upstream.partial.filter((r) => caseOf(r.target, r.host) < 0), []);
});

test('every refusal is counted once, with role "" (no role answered it), and none against the role', async (t) => {
  const scraped = await scrape(sidecar);
  const want = new Map<string, number>();
  for (const c of CORPUS) if (typeof c.end === 'number') want.set(String(c.end), (want.get(String(c.end)) ?? 0) + 1);
  for (const [code, n] of want) {
    t.is(scraped.find('switchyard_requests_total', { listener: 'web', role: '', code }), n, `requests_total{role="", code="${code}"}`);
  }
  const againstRole = scraped.series('switchyard_requests_total', { listener: 'web', role: 'r' }).filter((s) => s.labels.code !== '200');
  t.deepEqual(againstRole, [], 'the role answered every request it was given with its 200');
});
