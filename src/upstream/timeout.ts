/**
 * A timeout that lets I/O already waiting be read first. After the event loop was
 * blocked (a loaded machine, a long GC), timers run before sockets are polled, so an
 * answer that came in time would lose to its own timeout: `fire` runs in the check
 * phase after that poll, and should look whether what it waited for has come.
 * `arg` is passed to `fire`, so a caller can give a function made once instead of a closure.
 */
export function timeoutAfterIo(fire: () => void, ms: number): NodeJS.Timeout;
export function timeoutAfterIo<T>(fire: (arg: T) => void, ms: number, arg: T): NodeJS.Timeout;
export function timeoutAfterIo<T>(fire: (arg?: T) => void, ms: number, arg?: T): NodeJS.Timeout {
  const timer = setTimeout(afterIo<T>, ms, fire, arg);
  timer.unref();
  return timer;
}

function afterIo<T>(fire: (arg?: T) => void, arg?: T): void {
  setImmediate(fire, arg);
}
