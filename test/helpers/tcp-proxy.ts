import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/** A TCP proxy that can be stopped and started on the same port: a dependency that goes down and comes back. */
export class TcpProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly pairs = new Set<[Socket, Socket]>();
  /** Silent: connections stay open, nothing gets through in either direction. */
  private held = false;
  /** The target's answers are read and lost (a half-open connection). */
  private dropping = false;
  /** While dropping: bytes of the next answer on each connection let through first. */
  private cut = 0;
  private readonly discards = new Map<Socket, (chunk: Buffer) => void>();
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<number> {
    this.server = createServer((client) => {
      const upstream = connect(this.targetPort, this.targetHost);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      if (!this.held) this.flow(pair);
      if (this.dropping) this.drop(pair);
      client.on('close', () => {
        upstream.destroy();
        this.pairs.delete(pair);
      });
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  /** A dependency that hangs: connections stay open (new ones are accepted), and nothing answers. */
  hold(): void {
    this.held = true;
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /**
   * Requests still reach the target, and its answers are thrown away: a connection that lost its
   * replies (a NAT or proxy that dropped its state) and never learns it.
   */
  dropReplies(): void {
    this.dropping = true;
    this.cut = 0;
    for (const pair of this.pairs) this.drop(pair);
  }

  /**
   * As dropReplies, except that the first `bytes` of what the target sends next on each
   * connection get through: a connection lost in the middle of a message.
   */
  cutReplies(bytes: number): void {
    this.dropping = true;
    this.cut = bytes;
    for (const pair of this.pairs) this.drop(pair);
  }

  /** Lets everything held through again; answers are no longer dropped (those dropped are lost). */
  release(): void {
    if (this.dropping) {
      this.dropping = false;
      for (const [client, upstream] of this.pairs) {
        const discard = this.discards.get(upstream);
        if (discard) upstream.off('data', discard);
        this.discards.delete(upstream);
        upstream.pipe(client);
      }
      return;
    }
    this.held = false;
    for (const pair of this.pairs) this.flow(pair);
  }

  private drop([client, upstream]: [Socket, Socket]): void {
    upstream.unpipe(client);
    let pass = this.cut;
    const discard = (chunk: Buffer): void => {
      if (pass <= 0) return;
      client.write(chunk.subarray(0, pass));
      pass -= Math.min(pass, chunk.length);
    };
    this.discards.set(upstream, discard);
    upstream.on('data', discard);
    // unpipe() left the stream paused, and a 'data' listener does not resume a stream paused
    // that way: without this the answers were only held back, and delivered on release().
    upstream.resume();
  }

  private flow([client, upstream]: [Socket, Socket]): void {
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Refuses new connections and cuts the open ones. */
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }
}
