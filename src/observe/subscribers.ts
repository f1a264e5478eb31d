import diagnostics from 'node:diagnostics_channel';
import type { ConnectionEvent, RequestEvent, UpstreamTryEvent } from './events.js';
import { logHttp, logTcp } from './access_record.js';

/**
 * Switchyard's own subscribers: the metrics and the access log receive the data
 * path's outcomes through diagnostics_channel, as anyone else would. Subscribed
 * once per process, at import; each event carries where it is counted and logged
 * (its generation's metric children and log sink), so several sidecars in one
 * process (the tests) keep apart.
 */

// hot path
function onRequest(message: unknown): void {
  const e = message as RequestEvent;
  e.sinks.metrics.count(e.status, e.answerMs / 1000);
  if (e.sinks.log !== null) logHttp(e.sinks.log, e);
}

function onConnection(message: unknown): void {
  const e = message as ConnectionEvent;
  e.sinks.metrics.tcpConnection(e.result);
  if (e.sinks.log !== null) logTcp(e.sinks.log, e);
}

function onUpstreamTry(message: unknown): void {
  const e = message as UpstreamTryEvent;
  if (e.kind === 'failed') e.sinks.metrics.upstreamError(e.reason);
  else e.sinks.metrics.retried(e.reason);
}

diagnostics.subscribe('switchyard:request', onRequest);
diagnostics.subscribe('switchyard:connection', onConnection);
diagnostics.subscribe('switchyard:upstream', onUpstreamTry);
