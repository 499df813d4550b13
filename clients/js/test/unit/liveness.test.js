// Liveness against fake nodes: the device sends an application ping after
// ping_ms without a data frame, and takes the connection for dead when
// nothing at all arrives within a further ping_ms. Any data frame is life;
// WebSocket pings are not (browsers cannot see them, so neither runtime
// counts them).
import test from 'node:test';
import assert from 'node:assert/strict';
import { Device } from '../../src/index.js';
import { fakeNode, watch } from '../helpers/fake-node.js';

function device(t, opts) {
  const d = new Device({ token: 'tok', minBackoff: 1, maxBackoff: 20, ...opts });
  t.after(() => d.stop());
  return d;
}

test('a node that answers the pings keeps the connection up', async (t) => {
  const node = await fakeNode((c) => c.welcome({ ping_ms: 150 }));
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { nodes: [node.url], ...w.opts }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  // Four pings, each answered by a pong: four silent intervals survived.
  await c.signal.wait(() => c.count('ping') >= 4, 10_000, 'four application pings');
  const pings = c.frames.filter((f) => f.type === 'ping');
  assert.ok(pings.every((f) => /^lv\d+$/.test(f.id)), 'pings carry ids');
  assert.equal(c.closed, null);
  assert.equal(node.conns.length, 1);
  assert.deepEqual(w.ev.closes, []);
  assert.equal(d.stats().connects, 1);
  assert.ok(d.stats().pongs >= 3);
});

test('a node that stops answering is taken for dead after 2 × ping_ms, and the device moves on', async (t) => {
  const pingMs = 200;
  let welcomedAt = 0;
  const dying = await fakeNode((c) => {
    c.autoPong = false; // hears the pings, answers nothing
    c.welcome({ ping_ms: pingMs });
    welcomedAt = performance.now();
  });
  const other = await fakeNode((c) => c.welcome({ ping_ms: 60_000 }));
  t.after(() => Promise.all([dying.close(), other.close()]));
  const w = watch();
  const d = device(t, { nodes: [dying.url, other.url], ...w.opts }).start();
  await w.wait(() => w.ev.closes.length === 1, 'the close of the dead connection');
  const after = performance.now() - welcomedAt;
  const [close] = w.ev.closes;
  assert.equal(close.code, 1006);
  assert.match(close.reason, /^ping_timeout: nothing from the node for \d+ms \(ping_ms 200\)$/);
  assert.ok(after >= 2 * pingMs - 5, `gave up after ${after}ms, before 2 × ping_ms`);
  const c = await dying.conn(1);
  assert.equal(c.count('ping'), 1, 'one ping, then the verdict');
  await other.conn(1);
  await d.waitConnected();
  assert.equal(dying.conns.length, 1, 'did not go back first to the node that died under it');
  assert.equal(d.stats().connects, 2);
});

test('any data frame is life: a node that keeps writing is never pinged', async (t) => {
  const node = await fakeNode((c) => {
    c.autoPong = false;
    c.welcome({ ping_ms: 1000 });
    let n = 0;
    const timer = setInterval(() => {
      if (c.closed || ++n > 400) return clearInterval(timer);
      c.send({ type: 'push', id: String(n), no_ack: true, data: n });
      c.signal.notify(); // re-checks the test's condition
    }, 50);
  });
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { nodes: [node.url], ...w.opts }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  // 60 frames 50ms apart span three ping intervals.
  await c.signal.wait(() => d.stats().pushes >= 60, 20_000, 'sixty pushes');
  assert.equal(c.count('ping'), 0, 'the device pinged a node that was writing');
  assert.deepEqual(w.ev.closes, []);
  assert.equal(d.stats().connects, 1);
});

test('WebSocket pings alone are not life: only data frames are', async (t) => {
  const node = await fakeNode((c) => {
    c.autoPong = false;
    c.welcome({ ping_ms: 200 });
    const timer = setInterval(() => (c.closed ? clearInterval(timer) : c.ws.ping()), 40);
  });
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { nodes: [node.url], ...w.opts }).start();
  await w.wait(() => w.ev.closes.length === 1, 'the close');
  assert.match(w.ev.closes[0].reason, /^ping_timeout/);
  void d;
});

test('a late pong still counts: the ping outstanding is cleared by any frame', async (t) => {
  const node = await fakeNode((c) => {
    c.autoPong = false;
    c.welcome({ ping_ms: 200 });
    c.ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString());
      // Answer each ping after half a ping interval.
      if (f.type === 'ping') setTimeout(() => !c.closed && c.send({ type: 'pong', id: f.id }), 100);
    });
  });
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { nodes: [node.url], ...w.opts }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  await c.signal.wait(() => c.count('ping') >= 4, 10_000, 'four pings');
  assert.deepEqual(w.ev.closes, []);
  assert.equal(d.stats().connects, 1);
});
