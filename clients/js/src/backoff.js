// Full-jitter exponential backoff: the n-th wait of a run of failures is a
// uniformly random delay in [0, min(max, min * 2^n)].

/**
 * @typedef {object} BackoffOptions
 * @property {number} [minMs] first ceiling, in ms (default 100)
 * @property {number} [maxMs] largest ceiling, in ms (default 10000)
 * @property {() => number} [random] source of numbers in [0, 1) (default Math.random)
 */

export class Backoff {
  /** @param {BackoffOptions} [o] */
  constructor(o = {}) {
    this.minMs = o.minMs ?? 100;
    this.maxMs = o.maxMs ?? 10_000;
    this.random = o.random ?? Math.random;
    this.ceiling = this.minMs;
  }

  /** The next delay, in whole ms; the ceiling doubles after it (capped). */
  next() {
    const d = this.jitter(this.ceiling);
    this.ceiling = Math.min(this.ceiling * 2, this.maxMs);
    return d;
  }

  /** A delay in [0, ceilingMs], at random. */
  jitter(ceilingMs) {
    return Math.floor(this.random() * (ceilingMs + 1));
  }

  /** Back to the first ceiling, after a connection that worked. */
  reset() {
    this.ceiling = this.minMs;
  }
}
