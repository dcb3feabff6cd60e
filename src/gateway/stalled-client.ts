import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Disconnects a client that has stopped taking the answer: output is queued for it and none of
 * it has left for `ms`. The response is destroyed; for a stream still running, its `close`
 * handler reads that as the client leaving (the upstream call is cancelled, the row says 499),
 * while a whole answer already written keeps its row as it was. Until then a client that stopped
 * reading held its connection, the queued answer and, for a stream, the upstream call until its
 * total timeout; a stalled stream's producer waits on `drain` for ever.
 *
 * Watches until `until` (`drain` while a stream waits to write more, `finish` after the last
 * write), the response's finish or its close: a finished response's socket may already serve
 * the connection's next request, which is not this watcher's to cut. Progress is the socket's
 * queue going down: a client that reads slowly but steadily is never cut, however long a large
 * answer takes it.
 */
export function disconnectIfStalled(res: ServerResponse, until: 'drain' | 'finish', ms: number): void {
  const socket = res.socket;
  if (ms <= 0 || res.destroyed) return;
  // A pipelined response waits for the one before it to finish: watch it from its turn.
  if (!socket) {
    res.once('socket', () => disconnectIfStalled(res, until, ms));
    return;
  }
  let last = unsent(socket);
  let movedAt = performance.now();
  // Looked at four times per period: the kernel keeps taking bytes for a while after the client
  // stops reading, so a look once a period saw that as progress and cut the client after two.
  const timer = setInterval(
    () => {
      // Finished: the socket may be serving the connection's next request by now.
      if (res.writableFinished) return stop();
      const now = unsent(socket);
      if (now !== last && now !== undefined) {
        last = now;
        movedAt = performance.now();
        return;
      }
      if (performance.now() - movedAt < ms) return;
      stop();
      res.destroy();
    },
    Math.max(10, ms / 4),
  ).unref();
  const stop = () => {
    clearInterval(timer);
    res.off(until, stop);
    res.off('finish', stop);
    res.off('close', stop);
  };
  res.once(until, stop);
  if (until !== 'finish') res.once('finish', stop);
  res.once('close', stop);
}

/**
 * What is still to be sent on a socket: its stream's buffer (which counts a write in flight
 * whole) plus what libuv has left of that write, which goes down as the peer reads. Node
 * exposes the second only on the handle; without it, a pending write counts as no progress.
 */
function unsent(socket: Socket): string | undefined {
  const handle = (socket as Socket & { _handle?: { writeQueueSize?: number } | null })._handle;
  if (!handle) return undefined;
  return `${socket.writableLength}:${handle.writeQueueSize ?? ''}`;
}
