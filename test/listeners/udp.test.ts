import test, { type ExecutionContext } from 'ava';
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { join } from 'node:path';
import type { Sidecar } from '../../src/sidecar.js';
import {
  findMetric, metric, putConfig, startSidecar, tempFiles, twoRoles, until, untilLogLines, untilMetric, weighted, within, yaml, type ConfigSpec,
} from '../helpers.js';

/*
 * udp listeners: the role is chosen per client flow (source ip:port) by the chain
 * and kept while the flow lives; answers come back from the listener's address; a
 * flow ends after timeouts.idle; flows are capped; a reload keeps the flows whose
 * role stays.
 */

interface UdpUpstream { address: string; seen: () => number }

/** A UDP server that answers every datagram with `name:` and the datagram. */
async function udpUpstream(t: ExecutionContext, name: string): Promise<UdpUpstream> {
  const s = createSocket('udp4');
  let seen = 0;
  s.on('message', (msg, r) => { seen++; s.send(`${name}:${String(msg)}`, r.port, r.address); });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return { address: `127.0.0.1:${s.address().port}`, seen: () => seen };
}

/** A client flow: its own socket (its own source port). */
async function flow(t: ExecutionContext, sc: Sidecar): Promise<{ ask: (msg: string) => Promise<string>; socket: DgramSocket }> {
  const a = sc.addresses().get('web')!;
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  const ask = (msg: string): Promise<string> => within(new Promise<string>((resolve) => {
    s.once('message', (m, from) => {
      // Answers come from the listener's own address.
      if (from.port !== a.port || from.address !== a.host) resolve(`from ${from.address}:${from.port}`);
      else resolve(String(m));
    });
    s.send(msg, a.port, a.host);
  }), 5_000, `an answer to ${msg}`);
  return { ask, socket: s };
}

function udpConfig(a: UdpUpstream, b: UdpUpstream, w: Record<string, number>, more: Record<string, unknown> = {}): ConfigSpec {
  return { drainTimeout: '1s', ...twoRoles([a.address], [b.address], { protocol: 'udp', address: '127.0.0.1:0', filters: [weighted(w)], ...more }) };
}

const roleOf = (answer: string): string => answer.split(':')[0]!;

test('200 flows split 50/50 within ±10 points; each flow stays on its role', async (t) => {
  const a = await udpUpstream(t, 'a');
  const b = await udpUpstream(t, 'b');
  const sc = await startSidecar(t, udpConfig(a, b, { a: 50, b: 50 }));
  const flows = await Promise.all(Array.from({ length: 200 }, () => flow(t, sc)));
  const first = await Promise.all(flows.map((f, i) => f.ask(`hello ${i}`)));
  const onA = first.filter((x) => roleOf(x) === 'a').length;
  t.true(onA >= 80 && onA <= 120, `${onA} of 200 on a`);
  t.is(first[7], `${roleOf(first[7]!)}:hello 7`);
  for (let k = 0; k < 5; k++) {
    const again = await Promise.all(flows.slice(0, 40).map((f) => f.ask('again')));
    t.deepEqual(again.map(roleOf), first.slice(0, 40).map(roleOf), 'a flow keeps its role');
  }
  t.is(await metric(sc, 'switchyard_udp_flows_active', { listener: 'web' }), 200);
  t.is(await metric(sc, 'switchyard_udp_datagrams_total', { listener: 'web', direction: 'in' }), 400);
  t.is(await metric(sc, 'switchyard_udp_datagrams_total', { listener: 'web', direction: 'out' }), 400);
});

test('a reload keeps the flows whose role stays; new flows follow the new weights', async (t) => {
  const a = await udpUpstream(t, 'a');
  const b = await udpUpstream(t, 'b');
  const sc = await startSidecar(t, udpConfig(a, b, { a: 0, b: 100 }));
  const old = await flow(t, sc);
  t.is(roleOf(await old.ask('before')), 'b');
  const push = await putConfig(sc, udpConfig(a, b, { a: 100, b: 0 }, { address: `127.0.0.1:${sc.addresses().get('web')!.port}` }));
  t.is(push.status, 200, push.body);
  t.is(await old.ask('after'), 'b:after', 'the open flow stays on b');
  const fresh = await flow(t, sc);
  t.is(roleOf(await fresh.ask('new')), 'a');
  t.is(await metric(sc, 'switchyard_udp_flows_active', { listener: 'web' }), 2);
});

test('a flood of source ports is capped at maxConnections flows; the rest is dropped and counted', async (t) => {
  const a = await udpUpstream(t, 'a');
  const b = await udpUpstream(t, 'b');
  const sc = await startSidecar(t, udpConfig(a, b, { a: 1, b: 1 }, { maxConnections: 20 }));
  const flows = await Promise.all(Array.from({ length: 50 }, () => flow(t, sc)));
  const answered = await Promise.all(flows.map((f) => f.ask('x').then(() => true, () => false)));
  t.is(answered.filter(Boolean).length, 20);
  t.is(await metric(sc, 'switchyard_udp_flows_active', { listener: 'web' }), 20);
  t.is(await metric(sc, 'switchyard_udp_datagrams_total', { listener: 'web', direction: 'dropped' }), 30);
  t.is(await metric(sc, 'switchyard_connections_refused_total', { listener: 'web', reason: 'listener' }), 30);
});

test('a flow ends after timeouts.idle and is logged once; its next datagram opens a new flow', async (t) => {
  const a = await udpUpstream(t, 'a');
  const b = await udpUpstream(t, 'b');
  const { dir } = await tempFiles(t, {});
  const log = join(dir, 'access.log');
  const sc = await startSidecar(t, { ...udpConfig(a, b, { a: 1, b: 0 }, { timeouts: { idle: '300ms' } }), accessLog: { path: log } });
  const f = await flow(t, sc);
  t.is(await f.ask('one'), 'a:one');
  await untilMetric(sc, 'switchyard_udp_flows_active', { listener: 'web' }, 0, 5_000, 'the idle flow to end');
  const [line] = await untilLogLines(log, (l) => l.type === 'udp');
  t.like(line, { type: 'udp', listener: 'web', role: 'a', result: 'ok', bytesIn: 3, bytesOut: 5, client: '127.0.0.1' });
  t.is(await f.ask('two'), 'a:two');
  t.is(await metric(sc, 'switchyard_udp_flows_active', { listener: 'web' }), 1);
});

test('udp listener config: header filters, tls and a missing port are refused', async (t) => {
  const sc = await startSidecar(t, { ...twoRoles(['127.0.0.1:9'], ['127.0.0.1:9']) });
  const bad = (more: Record<string, unknown>) => putConfig(sc, yaml({ ...twoRoles(['127.0.0.1:9'], ['127.0.0.1:9'], { protocol: 'udp', address: '127.0.0.1:0', ...more }) }));
  const r1 = await bad({ filters: [{ type: 'header_route', rules: [{ header: 'x', equals: 'y', role: 'a' }] }] });
  t.is(r1.status, 400);
  t.regex(r1.body, /SY_ERR_FILTER_SCOPE/);
  const r2 = await bad({ tls: { cert: '/x', key: '/y' } });
  t.regex(r2.body, /listeners\.web\.tls.*no TLS/);
  const r3 = await bad({ address: '127.0.0.1' });
  t.regex(r3.body, /needs a port/);
  t.is(await findMetric(sc, 'switchyard_udp_flows_active'), undefined);
});

test('an endpoint whose name does not resolve fails the flow, counted; the proxy serves on', async (t) => {
  const b = await udpUpstream(t, 'b');
  const sc = await startSidecar(t, { drainTimeout: '1s', ...twoRoles(['nonexistent.invalid:9999'], [b.address], { protocol: 'udp', address: '127.0.0.1:0', filters: [weighted({ a: 1, b: 0 })] }) });
  const f = await flow(t, sc);
  await t.throwsAsync(f.ask('into the void'));
  await untilMetric(sc, 'switchyard_upstream_errors_total', { listener: 'web', role: 'a', reason: 'connect-failure' }, 1, 5_000, 'the failure to be counted');
  t.is(await metric(sc, 'switchyard_udp_flows_active', { listener: 'web' }), 0);
  // Still serving: a new config sends the flows to b.
  const push = await putConfig(sc, { drainTimeout: '1s', ...twoRoles(['nonexistent.invalid:9999'], [b.address], { protocol: 'udp', address: `127.0.0.1:${sc.addresses().get('web')!.port}`, filters: [weighted({ a: 0, b: 1 })] }) });
  t.is(push.status, 200, push.body);
  t.is(await (await flow(t, sc)).ask('hello'), 'b:hello');
});
