/**
 * A timeout that lets I/O already waiting be read first. After the event loop was
 * blocked (a loaded machine, a long GC), timers run before sockets are polled, so an
 * answer that came in time would lose to its own timeout: `fire` runs in the check
 * phase after that poll, and should look whether what it waited for has come.
 */
export function timeoutAfterIo(fire: () => void, ms: number): NodeJS.Timeout {
  const timer = setTimeout(() => setImmediate(fire), ms);
  timer.unref();
  return timer;
}
