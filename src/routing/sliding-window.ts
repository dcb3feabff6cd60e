/**
 * The last `size` samples no older than `maxAgeMs`, with their mean in O(1) (amortised): a ring
 * buffer with a running sum. Old samples age out, so an endpoint that recovered is judged on what
 * it does now, not on what it did before.
 */
export class SlidingWindow {
  private readonly values: Float64Array;
  private readonly times: Float64Array;
  private head = 0;
  private count = 0;
  private sum = 0;

  constructor(
    readonly size: number,
    readonly maxAgeMs: number,
  ) {
    this.values = new Float64Array(size);
    this.times = new Float64Array(size);
  }

  add(value: number, now: number): void {
    this.expire(now);
    if (this.count === this.size) this.dropOldest();
    const i = (this.head + this.count) % this.size;
    this.values[i] = value;
    this.times[i] = now;
    this.count++;
    this.sum += value;
  }

  /** Samples still in the window. */
  length(now: number): number {
    this.expire(now);
    return this.count;
  }

  mean(now: number): number | undefined {
    this.expire(now);
    return this.count === 0 ? undefined : this.sum / this.count;
  }

  /** Sum of the samples in the window (e.g. errors when samples are 0/1). */
  total(now: number): number {
    this.expire(now);
    return this.count === 0 ? 0 : this.sum;
  }

  /** The q-quantile (0..1) of the samples; O(n log n), for reports rather than the hot path. */
  quantile(q: number, now: number): number | undefined {
    this.expire(now);
    if (this.count === 0) return undefined;
    const xs: number[] = [];
    for (let k = 0; k < this.count; k++) xs.push(this.values[(this.head + k) % this.size]);
    xs.sort((a, b) => a - b);
    return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))];
  }

  private expire(now: number): void {
    while (this.count > 0 && now - this.times[this.head] > this.maxAgeMs) this.dropOldest();
  }

  private dropOldest(): void {
    this.sum -= this.values[this.head];
    this.head = (this.head + 1) % this.size;
    this.count--;
    // Keeps float error from accumulating across many add/drop cycles.
    if (this.count === 0) this.sum = 0;
  }
}
