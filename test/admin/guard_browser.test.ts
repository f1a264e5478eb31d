import test from 'ava';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, Page } from 'playwright-core';
import type { ExecutionContext } from 'ava';
import { startSidecar, startUpstream, twoRoles } from '../helpers.js';
import { launchChromium } from './browser_support.js';
import type { Sidecar } from '../../src/sidecar.js';

/*
 * The attacks on the admin API that a web page in a browser on the same machine can
 * make, run from a real Chromium page against a real sidecar (with no token, the
 * default on loopback). Each changed the running config before the admin API's guard.
 */

let browser: Browser | undefined;

test.before(async () => {
  // DNS rebinding without a DNS server: the attacker's name resolves to loopback.
  browser = await launchChromium(['--host-resolver-rules=MAP rebind.attacker.test 127.0.0.1']);
});

test.after.always(async () => {
  await browser?.close();
});

async function sidecar(t: ExecutionContext): Promise<Sidecar> {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  return startSidecar(t, { components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '100', burst: '100' } } }, ...twoRoles(a, b, { filters: [{ type: 'ratelimit', component: 'limit' }] }) });
}

/** A page served from another origin (the attacker's site), with `html` as its body. */
async function attackerPage(t: ExecutionContext, html: string): Promise<Page> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const context = await browser!.newContext();
  t.teardown(() => context.close());
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  return page;
}

const rate = (sc: Sidecar): string | undefined => sc.runtime.current!.config.components['limit']!.metadata['requestsPerSecond'];

test('a cross-origin form (enctype text/plain) cannot set a component\'s metadata', async (t) => {
  const sc = await sidecar(t);
  const admin = `http://127.0.0.1:${sc.adminAddress!.port}`;
  // text/plain sends name=value: the name and value together make a JSON body.
  const page = await attackerPage(t, `<form id="f" method="POST" enctype="text/plain" action="${admin}/components/limit">
<input type="hidden" name='{"metadata": {"requestsPerSecond": "0.001", "burst": "1"}, "pad": "' value='"}'></form>`);
  const [answer] = await Promise.all([page.waitForNavigation(), page.evaluate(() => (document.getElementById('f') as HTMLFormElement).submit())]);
  t.is(answer?.status(), 403);
  t.is(rate(sc), '100', 'the rate limit is unchanged');
  t.is(sc.runtime.current!.number, 1);
});

test('a cross-origin no-cors fetch cannot POST /rollback or PUT /config', async (t) => {
  const sc = await sidecar(t);
  const admin = `http://127.0.0.1:${sc.adminAddress!.port}`;
  const page = await attackerPage(t, '<p>hello</p>');
  await page.evaluate(async (url) => {
    await fetch(`${url}/rollback`, { method: 'POST', mode: 'no-cors' }).catch(() => undefined);
    await fetch(`${url}/config`, { method: 'PUT', mode: 'no-cors', body: new Blob(['listeners: {}']) }).catch(() => undefined);
    await fetch(`${url}/components/limit`, { method: 'POST', mode: 'no-cors', body: '{"metadata": {"requestsPerSecond": "0.001", "burst": "1"}}' }).catch(() => undefined);
  }, admin);
  t.is(sc.runtime.current!.number, 1, 'no new generation');
  t.is(rate(sc), '100');
  t.is(sc.runtime.history.length, 1, 'nothing was even attempted');
});

test('DNS rebinding: a page on the attacker\'s name, resolved to the admin address, can neither read nor change the config', async (t) => {
  const sc = await sidecar(t);
  const context = await browser!.newContext();
  t.teardown(() => context.close());
  const page = await context.newPage();
  // The page's origin is now the admin API's own address under the attacker's name.
  const first = await page.goto(`http://rebind.attacker.test:${sc.adminAddress!.port}/`);
  t.is(first?.status(), 403);
  const got = await page.evaluate(async () => {
    const read = await fetch('/config');
    const write = await fetch('/config', { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: 'listeners: {}' });
    return { read: read.status, body: await read.text(), write: write.status };
  });
  t.is(got.read, 403);
  t.notRegex(got.body, /components|listeners/);
  t.is(got.write, 403);
  t.is(sc.runtime.current!.number, 1);
});
