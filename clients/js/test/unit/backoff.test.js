import test from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../../src/index.js';

test('the ceiling doubles from min up to max, with full jitter below it', () => {
  const top = new Backoff({ minMs: 100, maxMs: 1000, random: () => 0.9999999 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => top.next()), [100, 200, 400, 800, 1000, 1000]);
  const bottom = new Backoff({ minMs: 100, maxMs: 1000, random: () => 0 });
  assert.deepEqual([1, 2, 3].map(() => bottom.next()), [0, 0, 0]);
  const half = new Backoff({ minMs: 100, maxMs: 1000, random: () => 0.5 });
  assert.deepEqual([1, 2, 3].map(() => half.next()), [50, 100, 200]);
});

test('reset starts again from min', () => {
  const b = new Backoff({ minMs: 10, maxMs: 10_000, random: () => 0.9999999 });
  for (let i = 0; i < 8; i++) b.next();
  assert.equal(b.ceiling, 2560);
  b.reset();
  assert.equal(b.next(), 10);
});

test('defaults are 100ms and 10s, and delays stay in [0, ceiling] with Math.random', () => {
  const b = new Backoff();
  assert.equal(b.minMs, 100);
  assert.equal(b.maxMs, 10_000);
  let ceiling = 100;
  for (let i = 0; i < 20; i++) {
    const d = b.next();
    assert.ok(Number.isInteger(d) && d >= 0 && d <= ceiling, `${d} in [0, ${ceiling}]`);
    ceiling = Math.min(ceiling * 2, 10_000);
  }
});
