import type { Socket } from 'node:net';

/**
 * What to run when a socket closes, through one listener per socket: a listener per request
 * piled up on a connection of pipelined requests (all of them run at once), and Node printed
 * MaxListenersExceededWarning at the eleventh, into the JSON log. Each request adds its own to the
 * set, and takes it out again when it is done.
 */
export function onSocketClose(socket: Socket): Set<() => void> {
  let set = closers.get(socket);
  if (!set) {
    const fresh = new Set<() => void>();
    closers.set(socket, (set = fresh));
    socket.once('close', () => {
      for (const f of fresh) f();
      fresh.clear();
    });
  }
  return set;
}

const closers = new WeakMap<Socket, Set<() => void>>();
