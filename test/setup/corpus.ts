/**
 * `npm run corpus`: the configs a suite run recorded (SWITCHYARD_CONFIG_CORPUS, see
 * test/helpers.ts) into test/fixtures/config-corpus.jsonl, the schema agreement test's
 * corpus: one of each shape (addresses and temp paths aside), none over 20 kB.
 */
import { readFileSync, writeFileSync } from 'node:fs';

const [from, to] = process.argv.slice(2) as [string, string];
const seen = new Set<string>();
const out: string[] = [];
for (const line of readFileSync(from, 'utf8').split('\n')) {
  if (line === '') continue;
  const text = JSON.parse(line) as string;
  if (text.length > 20_000) continue;
  const shape = text.replace(/127\.\d+\.\d+\.\d+:\d+/g, 'ADDR').replace(/\/tmp\/[^\s"]+/g, 'TMP');
  if (seen.has(shape)) continue;
  seen.add(shape);
  out.push(line);
}
writeFileSync(to, out.join('\n') + '\n');
console.log(`${out.length} configs in ${to}`);
