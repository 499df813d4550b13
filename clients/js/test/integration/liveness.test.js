// Liveness against a real node, on a cluster of its own with a 500ms ping
// interval (shorter than the gaps between the demo app's pushes, one a
// second, which count as life too): a device keeps its connection through many intervals
// (its pings answered by pongs), and a node that freezes (SIGSTOP) is taken
// for dead; once it thaws, the device is back. (The 2 × ping_ms bound itself
// is tested against a fake node, in test/unit/liveness.test.js.)
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { Device, connectApp } from '../../src/index.js';
import { startCluster, tetherBin, tools, uniq } from '../helpers/cluster.js';
import { watch } from '../helpers/fake-node.js';

let envP;
function env() {
  envP ??= (async () => {
    const running = await startCluster({ bin: await tetherBin(), nodes: 1, pingInterval: '500ms' });
    const c = tools(running.desc);
    const app = await connectApp({ servers: c.natsUrl });
    return { running, c, app };
  })();
  return envP;
}
after(async () => {
  if (!envP) return;
  const { running, app } = await envP;
  process.kill(running.desc.pid, 'SIGCONT');
  await app.close();
  await running.stop();
});

test('a quiet device keeps its connection: its pings are answered, it never takes the node for dead', async (t) => {
  const { c } = await env();
  const w = watch();
  const d = new Device({ service: 'vacuum', token: await c.token(`idle-${uniq()}`), nodes: [c.nodes[0]], ...w.opts });
  t.after(() => d.stop());
  d.start();
  const welcome = await d.waitConnected({ timeoutMs: 15_000 });
  assert.equal(welcome.ping_ms, 500);
  // Four pongs: four silent intervals bridged by the device's pings.
  await w.wait(() => w.ev.frames.filter((f) => f.type === 'pong').length >= 4, 'four pongs', 30_000);
  assert.deepEqual(w.ev.closes, []);
  assert.equal(d.stats().connects, 1);
  assert.equal(d.welcome.conn, welcome.conn);
});

test('a frozen node is taken for dead (ping_timeout); the device comes back when it thaws', async (t) => {
  const { running, c, app } = await env();
  const id = `frozen-${uniq()}`;
  const w = watch();
  const d = new Device({
    service: 'vacuum', token: await c.token(id), nodes: [c.nodes[0]],
    connectTimeout: 500, minBackoff: 10, maxBackoff: 200, ...w.opts,
  });
  t.after(() => d.stop());
  d.start();
  const first = await d.waitConnected({ timeoutMs: 15_000 });
  process.kill(running.desc.pid, 'SIGSTOP');
  let thawed = false;
  t.after(() => !thawed && process.kill(running.desc.pid, 'SIGCONT'));
  await w.wait(() => w.ev.closes.length >= 1, 'the close of the frozen connection', 30_000);
  assert.equal(w.ev.closes[0].code, 1006);
  assert.match(w.ev.closes[0].reason, /^ping_timeout/);
  // Attempts on the frozen node time out; keep trying.
  await w.wait(() => w.ev.errors.length >= 1 || w.ev.closes.length >= 2, 'a failed attempt on the frozen node', 30_000);
  process.kill(running.desc.pid, 'SIGCONT');
  thawed = true;
  await w.wait(() => w.ev.welcomes.length >= 2, 'a new welcome after the thaw', 30_000);
  assert.notEqual(d.welcome.conn, first.conn);
  // The whole cluster was frozen, NATS with it: the node's NATS
  // connection may still be reconnecting when the device is welcomed, and
  // a push meanwhile is offline. Reachable again within a few seconds.
  let r;
  for (const until = Date.now() + 15_000; Date.now() < until; await new Promise((res) => setTimeout(res, 100))) {
    r = await app.service('vacuum').pushDevice(id, { x: 1 }, { timeoutMs: 5_000 });
    if (r.status === 'acked') break;
  }
  assert.equal(r.status, 'acked', JSON.stringify(r));
  assert.equal(r.acks[0].conn, d.welcome.conn);
});
