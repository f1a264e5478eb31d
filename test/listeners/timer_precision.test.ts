import test, { type ExecutionContext } from 'ava';
import { connect, createServer, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import {
  StallProbe, blackhole, listenerUrl, oneRole, startSidecar, startUpstream, uniqueHost, type ConfigSpec, type ListenerSpec,
} from '../helpers.js';

/*
 * Every listener timeout fires when its value says (README: within 50 ms on an idle
 * machine). The sidecar runs in this process: a probe timer every 5 ms sees when this
 * process did not run at all (a loaded machine), and a run is allowed the longest such
 * stall from just before its timeout was due until it was seen, plus 100 ms. Before: undici runs timeouts of
 * 1 s and more on a 0.5 s clock (upstream: 1s answered at 1.50 s; connect likewise) and
 * Node checked the headers/request timeouts once a second (headers: 1s → 408 at 1.73 s).
 * Five at once, started apart, so a lucky tick of a coarse clock cannot pass the test.
 */

const SLACK_MS = 100;
const ONE_S = 1_000;

/** A run: how long the timeout took, and the longest stall of this process around when it was due. */
interface Run { ms: number; late: number }

/** The stall probe of the test running now (the tests here run one at a time). */
let probe: StallProbe | undefined;
test.beforeEach(() => { probe = new StallProbe(); });
test.afterEach.always(() => probe?.stop());
const stall = (from: number, to: number): number => probe!.stall(from, to);

/** A clock started now: late() is the longest stall from just before ONE_S had passed until now. */
function reference(): Promise<number> {
  const t0 = performance.now();
  return new Promise((r) => setTimeout(() => setImmediate(() => r(t0)), ONE_S - 50));
}

/** A run's duration, with the stall from just before it was due until it was seen. */
async function measured(started: Promise<number>, ref: Promise<number>): Promise<Run> {
  const ms = await started;
  const t0 = await ref;
  return { ms, late: stall(t0 + ONE_S - 50, performance.now()) };
}

function config(endpoint: string, timeouts: ListenerSpec['timeouts'], protocol: 'http' | 'tcp' = 'http'): ConfigSpec {
  return oneRole(endpoint, { address: `${uniqueHost()}:${protocol === 'tcp' ? 9 : 0}`, protocol, target: 'r', timeouts }, { channel: 'c' });
}

/** Runs `one` five times, 97 ms apart (so the starts fall on different phases of a coarse clock's tick). */
async function five(one: () => Promise<Run>): Promise<Run[]> {
  const runs: Promise<Run>[] = [];
  for (let i = 0; i < 5; i++) {
    runs.push(one());
    await new Promise((r) => setTimeout(r, 97));
  }
  return Promise.all(runs);
}

/**
 * None early, and the median run within SLACK_MS of its value (beyond what the plain timer
 * was late). A coarse clock cannot pass: five starts 97 ms apart fall on different phases
 * of its tick, so their lateness spreads over the tick (before: 0.5 s and 1 s ticks, median
 * lateness about half of it). A loaded machine can hold up one or two runs (seen: 214 ms
 * with the plain timer on time) without failing the test.
 */
function within(t: ExecutionContext, took: Run[], ms: number, what: string): void {
  const all = took.map((r) => `${r.ms.toFixed(0)} (stalled ${r.late.toFixed(0)})`).join(', ');
  // A run is timed from when the client saw its last byte, which a loaded machine can delay.
  for (const r of took) t.true(r.ms >= ms - 60, `${what}: fired early, after ${r.ms.toFixed(0)} ms (all: ${all})`);
  const late = took.map((r) => r.ms - ms - Math.max(0, r.late)).sort((a, b) => a - b);
  t.true(late[Math.floor(late.length / 2)]! <= SLACK_MS, `${what}: configured ${ms} ms, fired after ${all}`);
}

/** GET on a fresh connection: resolves with [status, ms until the answer]. */
function timedGet(url: string): Promise<[number, number]> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = httpRequest(url, { agent: false }, (res) => {
      res.resume();
      resolve([res.statusCode ?? 0, performance.now() - t0]);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Opens a raw connection to the listener, writes `data`, resolves with the ms until the server closes it (and what it said). */
function timedRaw(url: string, data: string): Promise<{ ms: number; said: string }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s: Socket = connect({ host: u.hostname, port: Number(u.port) }, () => s.write(data));
    let said = '';
    s.on('data', (d: Buffer) => { said += d.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => resolve({ ms: performance.now() - t0, said }));
  });
}

/** A GET's status and timing, with the reference timer started with it. */
async function getRun(t: ExecutionContext, url: string, status: number): Promise<Run> {
  const late = reference();
  const [got, ms] = await timedGet(url);
  t.is(got, status);
  return measured(Promise.resolve(ms), late);
}

/** A raw request's timing (until the server closes), with the reference timer; the answer must match `said`. */
async function rawRun(t: ExecutionContext, url: string, data: string, said: RegExp): Promise<Run> {
  const late = reference();
  const r = await timedRaw(url, data);
  t.regex(r.said, said);
  return measured(Promise.resolve(r.ms), late);
}

/** Resolves with the time from the last 'data' of `s` until it closes, and the reference timer started at that last data. */
function idleUntilClose(s: NodeJS.EventEmitter, closer: NodeJS.EventEmitter = s): Promise<Run> {
  return new Promise((resolve) => {
    let t0 = 0;
    let late: Promise<number> = Promise.resolve(0);
    s.on('data', () => { t0 = performance.now(); late = reference(); });
    s.on('error', () => {});
    closer.on('close', () => resolve(measured(Promise.resolve(performance.now() - t0), late)));
  });
}

test.serial('timeouts.upstream: 1s answers 504 after 1 s, not on a coarse clock', async (t) => {
  const up = await startUpstream(t, 'hang', (req) => { req.resume(); });
  const sc = await startSidecar(t, config(up.address, { upstream: '1s' }));
  within(t, await five(() => getRun(t, listenerUrl(sc, 'web'), 504)), ONE_S, 'upstream');
});

test.serial('timeouts.upstream between body chunks: a stalled response is cut 1 s after its last chunk', async (t) => {
  let sent = 0;
  const late: Promise<number>[] = [];
  const up = await startUpstream(t, 'stall', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    // The clock starts when the proxy gets this chunk: measured from here, in this process.
    res.write('first chunk', () => { late[sent] = reference(); sentAt[sent++] = performance.now(); });
  });
  const sentAt: number[] = [];
  const sc = await startSidecar(t, config(up.address, { upstream: '1s' }));
  const took = await five(() => new Promise<Run>((resolve, reject) => {
    const req = httpRequest(listenerUrl(sc, 'web'), { agent: false }, (res) => {
      const n = sent - 1;
      res.on('data', () => {});
      res.on('error', () => {});
      res.socket.on('close', () => resolve(measured(Promise.resolve(performance.now() - sentAt[n]!), late[n]!)));
    });
    req.on('error', reject);
    req.end();
  }));
  within(t, took, ONE_S, 'upstream (body)');
});

test.serial('timeouts.connect: 1s gives up on a blackholed endpoint after 1 s', async (t) => {
  const port = await blackhole(t);
  const sc = await startSidecar(t, config(`127.0.0.1:${port}`, { connect: '1s' }));
  within(t, await five(() => getRun(t, listenerUrl(sc, 'web'), 502)), ONE_S, 'connect');
});

test.serial('timeouts.total: 1s answers 504 after 1 s', async (t) => {
  const up = await startUpstream(t, 'hang', (req) => { req.resume(); });
  const sc = await startSidecar(t, config(up.address, { total: '1s' }));
  within(t, await five(() => getRun(t, listenerUrl(sc, 'web'), 504)), ONE_S, 'total');
});

test.serial('timeouts.headers: 1s answers 408 to a request head that never ends, after 1 s', async (t) => {
  const up = await startUpstream(t, 'ok');
  const sc = await startSidecar(t, config(up.address, { headers: '1s' }));
  within(t, await five(() => rawRun(t, listenerUrl(sc, 'web'), 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ', /^HTTP\/1\.1 408/)), ONE_S, 'headers');
});

test.serial('timeouts.request: 1s answers 408 to a body that never ends, 1 s after the request began', async (t) => {
  const up = await startUpstream(t, 'ok', (req) => { req.resume(); });
  const sc = await startSidecar(t, config(up.address, { request: '1s', headers: '500ms', upstream: '30s' }));
  within(t, await five(() => rawRun(t, listenerUrl(sc, 'web'), 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nsome', /^HTTP\/1\.1 408/)), ONE_S, 'request');
});

test.serial('timeouts.keepAlive: 1s closes an idle keep-alive connection 1 s after its last response', async (t) => {
  const up = await startUpstream(t, 'ok');
  const sc = await startSidecar(t, config(up.address, { keepAlive: '1s' }));
  const u = new URL(listenerUrl(sc, 'web'));
  const took = await five(() => {
    const s = connect({ host: u.hostname, port: Number(u.port) }, () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    return idleUntilClose(s);
  });
  within(t, took, ONE_S, 'keepAlive');
});

test.serial('timeouts.idle (tcp): 1s closes a connection with no bytes either way after 1 s', async (t) => {
  const echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => echo.close());
  const sc = await startSidecar(t, config(`127.0.0.1:${(echo.address() as { port: number }).port}`, { idle: '1s' }, 'tcp'));
  const a = sc.addresses().get('web')!;
  const took = await five(() => {
    const s = connect({ host: a.host, port: a.port }, () => s.write('x'));
    return idleUntilClose(s);
  });
  within(t, took, ONE_S, 'idle');
});

// Seen once in a loaded suite run: a 16 MB response to a slow reader was cut by the 300 ms
// gap timer. After a stall of the whole process, timers run before sockets are read, so the
// next chunk, already waiting, lost to the timer. Here the upstream (in this process) stalls it.
test.serial('timeouts.upstream does not cut a response whose next chunk came in time but the event loop was blocked', async (t) => {
  const up = await startUpstream(t, 'chunks', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('one ');
    setTimeout(() => {
      res.write('two ', () => {
        // The chunk is on its way to the proxy; hold the loop past the proxy's 300 ms timer.
        const end = Date.now() + 600;
        while (Date.now() < end) { /* a loaded machine */ }
        res.end('three');
      });
    }, 200);
  });
  const sc = await startSidecar(t, config(up.address, { upstream: '300ms' }));
  const body = await new Promise<string>((resolve, reject) => {
    const req = httpRequest(listenerUrl(sc, 'web'), { agent: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => resolve(text));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  t.is(body, 'one two three');
});

test.serial('timeouts.upstream does not fail an answer whose head came in time but the event loop was blocked', async (t) => {
  const up = await startUpstream(t, 'head', (req, res) => {
    req.resume();
    // In the check phase, so that the proxy's timers run before it polls its socket again.
    setTimeout(() => setImmediate(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('one ', () => {
        // The head is on its way to the proxy; hold the loop past the proxy's 300 ms timer.
        const end = Date.now() + 600;
        while (Date.now() < end) { /* a loaded machine */ }
        setTimeout(() => res.end('two'), 100); // the body is still coming when the proxy looks
      });
    }), 200);
  });
  const sc = await startSidecar(t, config(up.address, { upstream: '300ms' }));
  const [status, body] = await new Promise<[number, string]>((resolve, reject) => {
    const req = httpRequest(listenerUrl(sc, 'web'), { agent: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => resolve([res.statusCode ?? 0, text]));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  t.is(status, 200);
  t.is(body, 'one two');
});
