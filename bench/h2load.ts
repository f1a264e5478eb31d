/** h2load (Debian's nghttp2-client): where it is, and what its report says. */

export const H2LOAD = '/usr/bin/h2load';

/** h2load's summary: req/s, requests done and failed, mean request time. */
export function parseH2load(out: string): { rps: number; done: number; failed: number; meanMs: number } {
  const fin = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const time = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  if (!fin || !req || !time) throw new Error(`h2load: unexpected report:\n${out}`);
  const ms = (v: string, u: string): number => Number(v) * (u === 'us' ? 0.001 : u === 's' ? 1000 : 1);
  return { rps: Number(fin[1]), done: Number(req[3]), failed: Number(req[5]) + Number(req[6]), meanMs: ms(time[5]!, time[6]!) };
}
