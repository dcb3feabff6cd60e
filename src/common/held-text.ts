import { getHeapStatistics } from 'node:v8';

/**
 * Upstream text the gateway holds while it waits for the rest of it (a stream event not yet
 * complete, a whole JSON answer being read), counted across every request of the process. Each
 * is capped on its own (MAX_EVENT_CHARS, UPSTREAM_BODY_LIMIT), but many at once still filled the
 * heap: a misbehaving upstream sending 40 MB events to 150 streams ended the process out of
 * memory, every request in it lost. Past HELD_TEXT_LIMIT in all, the holding whose text takes it
 * over fails its request instead (the upstream's answer too large, a 502).
 *
 * Holdings under COUNTED_FROM are not counted: each is released within an event or an answer,
 * and the common path pays nothing but one comparison. A holder no longer used is released by
 * `release()`, or once it is garbage (a WeakRef) should its owner not say.
 */
/** An upstream's text refused because the process holds too much of such text at once (a 503: the gateway is overloaded). */
export class HeldTextLimit extends Error {}

export class HeldText {
  /** Characters (or bytes) held now. */
  private amount = 0;
  private ref?: WeakRef<HeldText>;

  /** Holds `n` more. False when that takes what the process holds past the limit: then it holds nothing. */
  add(n: number): boolean {
    this.amount += n;
    if (this.amount < COUNTED_FROM) return true;
    if (!this.ref) {
      this.ref = new WeakRef(this);
      counted.add(this.ref);
    }
    if (heldInAll() <= HELD_TEXT_LIMIT) return true;
    this.release();
    return false;
  }

  release(): void {
    this.amount = 0;
    if (this.ref) counted.delete(this.ref);
    this.ref = undefined;
  }

  get size(): number {
    return this.amount;
  }
}

/** Holdings of COUNTED_FROM or more. */
const counted = new Set<WeakRef<HeldText>>();

/** What the process holds in counted holdings now. */
export function heldInAll(): number {
  let n = 0;
  for (const ref of counted) {
    const h = ref.deref();
    if (h) n += h.size;
    else counted.delete(ref);
  }
  return n;
}

export const COUNTED_FROM = 1024 * 1024;

/**
 * A quarter of the heap (about 1 GiB with Node's default on a machine of 16 GB or more): what is
 * held is parsed or copied again before it is let go, and the rest of the gateway needs room.
 */
export const HELD_TEXT_LIMIT = Math.max(64 * 1024 * 1024, Math.floor(getHeapStatistics().heap_size_limit / 4));
