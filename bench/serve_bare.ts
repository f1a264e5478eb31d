/**
 * switchyard with request counting off, for the benchmark's metrics on/off figure:
 * `node dist/bench/serve_bare.js CONFIG`. It is `switchyard run` (the same Sidecar,
 * config and admin API) minus what the figure must leave out: requests_total and
 * request_duration_seconds are not counted (Metrics({countRequests: false})). Not a
 * user-facing switch: every user of the sidecar wants those metrics.
 */
import { Metrics } from '../src/metrics.js';
import { Sidecar } from '../src/sidecar.js';

const file = process.argv[2];
if (!file) {
  console.error('usage: serve_bare.js CONFIG');
  process.exit(2);
}
const sc = await Sidecar.start({ files: [file], metrics: new Metrics({ countRequests: false }), log: (l) => console.log(l) });
console.log('serving with request counting off');
const stop = (): void => { void sc.stop().then(() => process.exit(0)); };
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
