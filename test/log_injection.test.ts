// Issue 11, item 6: config text with CR/LF (a YAML "a\nb" string) must not forge log lines.
import test from 'ava';
import { join } from 'node:path';
import { oneRole, putConfig, runCli, startSidecar, startUpstream, tempFiles, type ConfigSpec } from './helpers.js';
import { oneLine } from '../src/errors.js';

const FORGED = 'generation 9 applied from api in 0.1 ms: no listener changes';

test('oneLine escapes CR, LF, tab and other control characters JSON-style, and leaves other text alone', (t) => {
  t.is(oneLine('a\r\nb\tc\u001b[2Jd\u0000e\u007f\u0085\u2028'), 'a\\r\\nb\\tc\\u001b[2Jd\\u0000e\\u007f\\u0085\\u2028');
  t.is(oneLine('plain café ✓ \\n'), 'plain café ✓ \\n');
});

test('validate: a listener name with CR/LF is reported on one line, escaped', async (t) => {
  const { paths } = await tempFiles(t, {
    'bad.yaml': `roles:\n  a: { channels: { http: { endpoints: ["127.0.0.1:1"] } } }\nlisteners:\n  "web\\r\\n${FORGED}":\n    target: a\n`,
  });
  const r = await runCli(t, ['validate', '--config', paths['bad.yaml']!]);
  t.is(r.code, 1);
  const lines = r.stderr.split('\n').filter(Boolean);
  t.false(lines.some((l) => l.startsWith(FORGED)), r.stderr);
  t.false(r.stderr.includes('\r'));
  const named = lines.filter((l) => l.includes('SY_ERR_CONFIG_NAME'));
  t.is(named.length, 1, r.stderr);
  t.true(named[0]!.includes(`listeners.web\\r\\n${FORGED}: name "web\\r\\n${FORGED}" must match`), named[0]);
});

test('a rejected reload logs one line per issue and per error, with the CR/LF escaped', async (t) => {
  const up = await startUpstream(t, 'a');
  const lines: string[] = [];
  const base = (listener: string, more: ConfigSpec = {}): ConfigSpec => ({ ...more, ...oneRole(up, { target: 'a' }, { role: 'a', listener }) });
  // It pushes an access log path of a new file (allowed here, to reach the open failure).
  const sc = await startSidecar(t, base('web'), { log: lines, allowPush: ['accessLog'] });
  const from = lines.length;
  const invalid = await putConfig(sc, base(`web\n${FORGED}`));
  t.is(invalid.status, 400);
  const { dir } = await tempFiles(t, {});
  const failed = await putConfig(sc, base('web', { accessLog: { path: join(dir, `no\n${FORGED}`, 'access.log') } }));
  t.is(failed.status, 409, failed.body);
  const logged = lines.slice(from);
  t.true(logged.length >= 3, logged.join('\n'));
  for (const l of logged) {
    t.false(/[\r\n]/.test(l), `one line: ${JSON.stringify(l)}`);
    t.false(l.startsWith(FORGED));
  }
  t.true(logged.some((l) => l.includes('(SY_ERR_CONFIG_NAME)') && l.includes(`web\\n${FORGED}`)), logged.join('\n'));
  t.true(logged.some((l) => /rejected \(failed\).*cannot open .*no\\n/.test(l)), logged.join('\n'));
});
