import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type Redis from 'ioredis';
import { AppConfig } from '../config/app-config';

export type RedisState = 'disabled' | 'connecting' | 'ready' | 'down';

/** ioredis's error for a command unanswered within `commandTimeout`. */
const COMMAND_TIMED_OUT = 'Command timed out';

/** Whether `err` is a command that got no answer in time: Redis may still run it once it answers. */
export function isCommandTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === COMMAND_TIMED_OUT;
}

/** How often a Redis taken as down after a timeout is pinged. */
const STALL_PROBE_MS = 1000;

/** Messages kept for sending while Redis is unreachable; past it, the oldest are dropped. */
const UNSENT_LIMIT = 10_000;

/**
 * The shared Redis connection, when REDIS_URL is set: state that every process and replica must
 * agree on (limits, budgets, circuit and health state) lives there. Commands fail at once while
 * Redis is unreachable (no offline queue), so callers fall back to their per-process state
 * instead of waiting; the client reconnects in the background.
 */
@Injectable()
export class RedisService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Redis');
  private redis?: Redis;
  /** A subscribed connection can run no other command: subscriptions get one of their own. */
  private subscriber?: Redis;
  private readonly handlers = new Map<string, Array<(message: string) => void>>();
  private readonly gapHandlers = new Map<string, Array<() => void>>();
  private state: RedisState = 'disabled';
  private lastError?: string;
  /** performance.now() of the connection's last 'ready'. */
  private readyAt = 0;
  /** Messages published while Redis was unreachable, as JSON `[channel, message]`, oldest first. */
  private readonly unsent = new Set<string>();
  private dropped = 0;
  /** While Redis is taken as down after a command timed out: the ping that finds it answering again. */
  private probe?: ReturnType<typeof setInterval>;
  private readonly readyHandlers: Array<() => void> = [];

  constructor(private readonly config: AppConfig) {}

  get status(): RedisState {
    return this.state;
  }

  get error(): string | undefined {
    return this.lastError;
  }

  /** The client while Redis is ready; undefined when disabled or unreachable (use local state). */
  get client(): Redis | undefined {
    return this.state === 'ready' ? this.redis : undefined;
  }

  /** Key prefix for everything this gateway stores (REDIS_KEY_PREFIX). */
  key(...parts: Array<string | number>): string {
    return `${this.config.env.REDIS_KEY_PREFIX}${parts.join(':')}`;
  }

  /**
   * Sends `message` to every process subscribed to `channel` (this one too), on every replica.
   * While Redis is unreachable (or a send fails), the message waits here and goes out when the
   * connection is back: the others would otherwise never hear it (pub/sub keeps no messages).
   * Each distinct message waits once, up to UNSENT_LIMIT; false when it was not sent at once.
   */
  publish(channel: string, message: string): boolean {
    const client = this.client;
    if (!client) {
      this.keepUnsent(channel, message);
      return false;
    }
    client.publish(this.key(channel), message).catch(() => this.keepUnsent(channel, message));
    return true;
  }

  private keepUnsent(channel: string, message: string): void {
    if (!this.redis) return;
    const key = JSON.stringify([channel, message]);
    if (this.unsent.has(key)) return;
    if (this.unsent.size >= UNSENT_LIMIT) {
      const oldest = this.unsent.values().next().value as string;
      this.unsent.delete(oldest);
      this.dropped++;
    }
    this.unsent.add(key);
  }

  /** Sends what waited while Redis was away (in the order it was published). */
  private sendUnsent(): void {
    if (this.dropped > 0) {
      this.logger.warn(`${this.dropped} messages published while Redis was away were not kept (over ${UNSENT_LIMIT})`);
      this.dropped = 0;
    }
    const waiting = [...this.unsent];
    this.unsent.clear();
    for (const key of waiting) {
      const [channel, message] = JSON.parse(key) as [string, string];
      this.publish(channel, message);
    }
  }

  /**
   * Calls `handler` with every message published on `channel` from now on. Subscriptions are
   * renewed after a reconnect (ioredis does it); what was published while disconnected is lost,
   * so `onGap` is called each time the subscription is in place again (the first time too: it
   * may come up late), once messages published from then on are sure to arrive. A subscriber
   * that keeps state those messages would have changed (a cache) must assume it missed some.
   * Call after init (onApplicationBootstrap); does nothing without REDIS_URL.
   */
  subscribe(channel: string, handler: (message: string) => void, onGap?: () => void): void {
    if (!this.redis) return;
    const name = this.key(channel);
    if (!this.subscriber) {
      // The offline queue here holds the SUBSCRIBE until Redis is reachable, however long that
      // takes; nothing on the request path waits on this connection.
      const sub = this.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
      sub.on('error', () => undefined); // the main connection reports Redis' state
      sub.on('message', (ch: string, msg: string) => {
        for (const h of this.handlers.get(ch) ?? []) h(msg);
      });
      // Emitted before ioredis renews the subscriptions; this SUBSCRIBE (the same channels again:
      // no change) is answered once they are in place on this connection.
      sub.on('ready', () => {
        const channels = [...this.gapHandlers.keys()];
        if (channels.length === 0) return;
        sub.subscribe(...channels).then(
          () => {
            for (const ch of channels) for (const h of this.gapHandlers.get(ch) ?? []) h();
          },
          () => undefined, // lost again: the next 'ready' tries again
        );
      });
      this.subscriber = sub;
    }
    if (onGap) this.gapHandlers.set(name, [...(this.gapHandlers.get(name) ?? []), onGap]);
    const list = this.handlers.get(name);
    if (list) return void list.push(handler);
    this.handlers.set(name, [handler]);
    this.subscriber.subscribe(name).catch((err: Error) => this.logger.warn(`cannot subscribe to ${name}: ${err.message}`));
  }

  async onModuleInit(): Promise<void> {
    const url = this.config.env.REDIS_URL;
    if (!url) return;
    this.state = 'connecting';
    // Loaded only when configured: the client and its dependencies cost ~6 MB of memory that a
    // gateway without Redis never needs. (A CommonJS require: jest runs this code as CommonJS.)
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Redis: RedisClient } = require('ioredis') as typeof import('ioredis');
    const redis = new RedisClient(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      commandTimeout: this.config.env.REDIS_COMMAND_TIMEOUT_MS,
      // A socket still connecting to an unreachable Redis is destroyed this soon after
      // disconnect() (ioredis waits 2 s by default), so shutdown does not wait on it.
      disconnectTimeout: 100,
      retryStrategy: (times) => Math.min(250 * times, 5000),
      // A command whose answer was lost with its connection is not sent again on the next one:
      // its caller has given up on it and acted on its own (a settlement made again later, from
      // a guarded replay), and the command may well have run. Sent again, a spend counted twice.
      autoResendUnfulfilledCommands: false,
    });
    this.redis = redis;
    redis.on('ready', () => {
      this.readyAt = performance.now();
      if (this.state !== 'ready') this.logger.log('connected');
      this.back();
    });
    redis.on('error', (err: Error) => {
      this.lastError = err.message;
    });
    redis.on('close', () => {
      if (this.state === 'ready')
        this.logger.warn(`connection lost (${this.lastError ?? 'closed'}); using per-process state until it is back`);
      if (this.state !== 'disabled') this.state = 'down';
    });
    try {
      await redis.connect();
    } catch (err) {
      this.state = 'down';
      this.lastError = (err as Error).message;
      this.logger.warn(`not reachable at start (${this.lastError}); using per-process state, retrying in the background`);
    }
  }

  /**
   * A caller's command failed. One that got no answer within REDIS_COMMAND_TIMEOUT_MS means Redis
   * stalls (a connection that closes says so itself): it is taken as down, so that callers use
   * their per-process state at once instead of each waiting out the timeout, until a ping answers.
   */
  noteFailure(err: unknown): void {
    if (this.state !== 'ready' || !isCommandTimeout(err)) return;
    // A command sent on the connection that was lost times out after the new one is ready (it is
    // not sent again: autoResendUnfulfilledCommands), which says nothing of the new connection.
    if (performance.now() - this.readyAt < this.config.env.REDIS_COMMAND_TIMEOUT_MS) return;
    this.state = 'down';
    this.lastError = `no answer within ${this.config.env.REDIS_COMMAND_TIMEOUT_MS} ms`;
    this.logger.warn(`${this.lastError}; using per-process state until it answers again`);
    this.probe ??= setInterval(() => {
      const redis = this.redis;
      if (!redis || this.state !== 'down') return;
      redis.ping().then(
        () => {
          if (this.state !== 'down') return;
          this.logger.log('answering again');
          this.back();
        },
        () => undefined, // still silent: the next tick asks again
      );
    }, STALL_PROBE_MS);
    this.probe.unref();
  }

  /** Ready (again): what waited for Redis goes out, and the callers that asked to know hear it. */
  private back(): void {
    clearInterval(this.probe);
    this.probe = undefined;
    this.state = 'ready';
    this.lastError = undefined;
    if (this.unsent.size > 0) this.sendUnsent();
    for (const h of this.readyHandlers) h();
  }

  /** Calls `handler` each time Redis is ready again after being down (reconnected, or answering again). */
  onReady(handler: () => void): void {
    this.readyHandlers.push(handler);
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.probe);
    this.probe = undefined;
    const redis = this.redis;
    this.redis = undefined;
    this.state = 'disabled';
    this.subscriber?.disconnect();
    this.subscriber = undefined;
    if (!redis) return;
    await redis.quit().catch(() => redis.disconnect());
  }
}
