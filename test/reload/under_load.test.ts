import test from 'ava';
import { get, metric, startUpstream, uniqueHost, until, weighted, within, type ConfigSpec } from '../helpers.js';
import { PLUGIN, admin, eventsOf, httpGet, newScope, startFromObject } from './support.js';

/*
 * The zero-loss promise (DESIGN.md "Data flow" 4–5): 100 reloads under steady
 * concurrent load, and not one request fails. The reloads alternate the weights,
 * move role a's endpoint between two servers, add and remove a listener, flip
 * another listener between tcp and http on the same address, update one component
 * in place and re-create another. The load: keep-alive clients and clients that
 * open a fresh connection per request (so every reload meets connects in flight),
 * on the stable listener and on the one that changes protocol.
 */

const RELOADS = 100;

test('100 reloads under steady concurrent load: zero failed requests', async (t) => {
  t.timeout(40_000);
  const a1 = await startUpstream(t, 'a1');
  const a2 = await startUpstream(t, 'a2');
  const b = await startUpstream(t, 'b');
  const scope = newScope('load');
  const hosts = { web: uniqueHost(), flip: uniqueHost(), extra: uniqueHost() };

  const config = (i: number): ConfigSpec => ({
    plugins: [PLUGIN],
    drainTimeout: '5s',
    roles: {
      a: { channels: { http: { endpoints: [(Math.floor(i / 3) % 2 === 0 ? a1 : a2).address] } } },
      b: { channels: { http: { endpoints: [b.address] } } },
    },
    vsets: { svc: { channels: ['http'], roles: { a: {}, b: {} } } },
    components: {
      // Updated in place every 5th reload.
      counter: { type: 'reload-counter', metadata: { scope, label: `c${Math.floor(i / 5)}` } },
      // Re-created (make before break) every 7th reload.
      plain: { type: 'reload-plain', metadata: { scope, label: `p${Math.floor(i / 7)}` } },
    },
    listeners: {
      web: {
        address: `${hosts.web}:0`,
        target: 'svc',
        filters: [
          { type: 'reload-use', component: i % 2 === 0 ? 'counter' : 'plain' },
          weighted(i % 2 === 0 ? { a: 9, b: 1 } : { a: 1, b: 9 }),
        ],
      },
      flip: {
        address: `${hosts.flip}:0`,
        protocol: Math.floor(i / 10) % 2 === 0 ? 'tcp' : 'http',
        target: 'svc',
        filters: [weighted({ a: 1, b: 1 })],
      },
      ...(i % 4 < 2 ? { extra: { address: `${hosts.extra}:0`, target: 'b' } } : {}),
    },
  });

  const { sc } = await startFromObject(t, config(0));
  const webAddr = sc.addresses().get('web')!;
  const flipAddr = sc.addresses().get('flip')!;
  const web = `http://${webAddr.host}:${webAddr.port}`;
  const flip = `http://${flipAddr.host}:${flipAddr.port}`;

  let stop = false;
  let phase = 'before the first reload';
  let sent = 0;
  let ok = 0;
  const failures: string[] = [];
  const roles: Record<string, number> = {};
  const count = (where: string, status: number, role: unknown): void => {
    if (status === 200) {
      ok++;
      roles[String(role)] = (roles[String(role)] ?? 0) + 1;
    } else failures.push(`${where} (${phase}): status ${status}`);
  };
  const worker = async (where: string, once: () => Promise<{ status: number; role: unknown }>) => {
    while (!stop) {
      sent++;
      try {
        const r = await once();
        count(where, r.status, r.role);
      } catch (err) {
        failures.push(`${where} (${phase}): ${(err as Error).message}`);
      }
    }
  };
  const load = [
    // Keep-alive clients (undici): requests on open connections cross every swap.
    ...Array.from({ length: 8 }, () => worker('web keep-alive', async () => {
      const r = await get(`${web}/`);
      return { status: r.status, role: r.headers['x-role'] };
    })),
    // A fresh connection per request: connects land during every swap.
    ...Array.from({ length: 3 }, () => worker('web fresh', async () => {
      const r = await httpGet(`${web}/`, { agent: false });
      return { status: r.status, role: r.headers['x-role'] };
    })),
    ...Array.from({ length: 2 }, () => worker('flip fresh', async () => {
      const r = await httpGet(`${flip}/`, { agent: false });
      return { status: r.status, role: JSON.parse(r.body).role };
    })),
  ];

  const t0 = performance.now();
  let extraServed = 0;
  try {
    for (let i = 1; i <= RELOADS; i++) {
      // Let the load run between reloads, so each one lands among requests in flight.
      const before = ok + failures.length;
      await until(() => ok + failures.length >= before + 5, 5_000, `load before reload ${i}`);
      phase = `reload ${i}`;
      const res = await admin(sc, 'PUT', '/config', config(i));
      if (res.status !== 200) {
        t.fail(`reload ${i}: ${res.status} ${res.text}`);
        break;
      }
      // An added listener serves as soon as the reload answered.
      const extra = sc.addresses().get('extra');
      if (extra) {
        const r = await httpGet(`http://${extra.host}:${extra.port}/`, { agent: false });
        if (r.status === 200 && r.headers['x-role'] === 'b') extraServed++;
        else failures.push(`extra after reload ${i}: ${r.status}`);
      }
      t.deepEqual(sc.addresses().get('web'), webAddr);
      t.deepEqual(sc.addresses().get('flip'), flipAddr);
    }
  } finally {
    phase = 'after the last reload';
    stop = true;
    await within(Promise.all(load), 10_000, 'the load to stop');
  }
  const duration = performance.now() - t0;

  const reloadSeconds = (await sc.runtime.metrics.reloadDuration.get()).values.find((v) => v.metricName === 'switchyard_config_reload_duration_seconds_sum')?.value ?? 0;
  t.log(`validate+build+swap: ${(reloadSeconds * 1000 / (RELOADS + 1)).toFixed(1)} ms per reload on average`);
  t.log(`${RELOADS} reloads in ${(duration / 1000).toFixed(2)} s; ${sent} requests sent, ${ok} ok, ${failures.length} failed; by upstream ${JSON.stringify(roles)}; the added listener answered ${extraServed} times`);
  t.deepEqual(failures.slice(0, 20), [], `${failures.length} of ${sent} requests failed`);
  t.is(ok, sent);
  t.true(sent >= RELOADS * 5);
  t.is(sc.runtime.current!.number, RELOADS + 1);
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'api', result: 'success' }), RELOADS);
  t.is(extraServed, RELOADS / 2);
  // Every change took effect: both endpoints of role a and role b served.
  for (const up of ['a1', 'a2', 'b']) t.true((roles[up] ?? 0) > 0, `${up} served`);

  // Everything the old generations held is let go: sockets, endpoint pools, components.
  await until(() => sc.runtime.draining.size === 0, 10_000, 'every old generation to drain');
  t.is(sc.runtime.sockets.all().length, Object.keys(config(RELOADS).listeners!).length, 'only the current listeners are bound');
  t.is(sc.runtime.endpoints.size, 2, 'only the current endpoints have pools');
  const events = eventsOf(scope);
  t.deepEqual(events.filter((e) => e.event === 'usedAfterClose'), [], 'no request used a closed component');
  const current = new Set([...sc.runtime.current!.components.values()].map((s) => (s.instance as unknown as { id: number }).id));
  const created = [...new Set(events.filter((e) => e.event === 'init').map((e) => e.id))];
  t.true(created.length >= 1 + Math.floor(RELOADS / 7), `${created.length} instances created`);
  for (const id of created) {
    const closes = events.filter((e) => e.id === id && e.event === 'close');
    t.is(closes.length, current.has(id) ? 0 : 1, `instance ${id} closed ${closes.length} time(s)`);
    for (const c of closes) t.is(c.inUse, 0, `instance ${id} closed while in use`);
  }
  t.true(events.filter((e) => e.event === 'applyConfig').length >= Math.floor(RELOADS / 5), 'the counter was updated in place');
});
