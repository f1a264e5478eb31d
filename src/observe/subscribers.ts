import diagnostics from 'node:diagnostics_channel';
import type { ComponentEvent, ConnectionEvent, ReloadEvent, RequestEvent, UpstreamTryEvent } from './events.js';
import { logHttp, logReload, logTcp } from './access_record.js';

/**
 * Switchyard's own subscribers: the metrics and the access log receive the data
 * path's outcomes and the control path's changes through diagnostics_channel, as
 * anyone else would. Subscribed
 * once per process, at import; each event carries where it is counted and logged
 * (its generation's metric children and log sink), so several sidecars in one
 * process (the tests) keep apart.
 */

// hot path
function onRequest(message: unknown): void {
  const e = message as RequestEvent;
  e.sinks.metrics.count(e.status, e.answerMs / 1000);
  if (e.grpcStatus !== '') e.sinks.metrics.grpc(e.grpcStatus);
  if (e.error === 'SY_ERR_UPLOAD_TOO_SLOW') e.sinks.metrics.slowUpload();
  const tally = e.sinks.metrics.tally;
  if (tally !== null) tally.add(e.status, e.grpcStatus, e.durationMs);
  if (e.sinks.log !== null) logHttp(e.sinks.log, e);
}

function onConnection(message: unknown): void {
  const e = message as ConnectionEvent;
  if (e.protocol === 'tcp') e.sinks.metrics.tcpConnection(e.result);
  if (e.sinks.log !== null) logTcp(e.sinks.log, e);
}

function onUpstreamTry(message: unknown): void {
  const e = message as UpstreamTryEvent;
  if (e.kind === 'failed') e.sinks.metrics.upstreamError(e.reason);
  else if (e.kind === 'retried') e.sinks.metrics.retried(e.reason);
  else e.sinks.metrics.budgetExhausted();
}

function onReload(message: unknown): void {
  const e = message as ReloadEvent;
  const metrics = e.sinks.metrics;
  const applied = e.result === 'applied';
  metrics.reloads.inc({ source: e.source, result: applied ? 'success' : e.result });
  metrics.lastReloadSuccessful.set(applied ? 1 : 0);
  if (applied) {
    metrics.generation.set(e.generation!);
    metrics.lastReloadSuccessTime.set(Date.now() / 1000);
    metrics.reloadDuration.observe(e.durationMs / 1000);
  }
  if (e.sinks.log !== null) logReload(e.sinks.log, e);
}

function onComponent(message: unknown): void {
  const e = message as ComponentEvent;
  e.sinks.metrics.componentUpdates.inc({ component: e.component, mode: e.mode, result: e.result });
}

diagnostics.subscribe('switchyard:request', onRequest);
diagnostics.subscribe('switchyard:reload', onReload);
diagnostics.subscribe('switchyard:component', onComponent);
diagnostics.subscribe('switchyard:connection', onConnection);
diagnostics.subscribe('switchyard:upstream', onUpstreamTry);
