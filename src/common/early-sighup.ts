/**
 * SIGHUP asks for the routing configuration to be read again; its default action ends the
 * process. Until the code that reloads is up (loading the app takes a second or two, a worker
 * of a WORKERS=N gateway as well), a SIGHUP — from a config manager right after a deploy, or an
 * admin reload forwarded to a worker still starting — would kill the gateway. Imported first by
 * main.ts, this module holds such a signal until `takeEarlySighup` is called: the reloader then
 * applies it (the files may have changed after they were read at start), the cluster primary,
 * whose workers read the files when they start, drops it.
 */
let pending = false;
const hold = (): void => {
  pending = true;
};
process.on('SIGHUP', hold);

/** Whether a SIGHUP came during start-up; from now on the caller's own handler takes them. */
export function takeEarlySighup(): boolean {
  process.off('SIGHUP', hold);
  const came = pending;
  pending = false;
  return came;
}

/**
 * From shutdown on, a SIGHUP is held again rather than left to its default action, which would
 * end the process before the request log is drained (rows lost). Nothing applies it.
 */
export function holdSighup(): void {
  if (!process.listeners('SIGHUP').includes(hold)) process.on('SIGHUP', hold);
}
