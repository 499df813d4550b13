// The device client against real tether nodes: node lists with dead nodes,
// node loss, the directory (service and client), the three ways to send the
// token, token refresh, takeover, refusals and frame limits.
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { Device, connectApp, ErrorCode } from '../../src/index.js';
import { cluster, uniq } from '../helpers/cluster.js';
import { deadUrl, watch } from '../helpers/fake-node.js';

let envP;
function env() {
  envP ??= (async () => {
    const c = await cluster();
    const app = await connectApp({ servers: c.natsUrl });
    return { c, app, vac: app.service('vacuum') };
  })();
  return envP;
}
after(async () => {
  if (!envP) return;
  const { c, app } = await envP;
  await app.close();
  await c.stop();
});

function start(t, opts) {
  const d = new Device({ minBackoff: 10, maxBackoff: 500, ...opts });
  t.after(() => d.stop());
  return d.start();
}

/** A TCP proxy to a node that the test can cut, as a lost node or network. */
async function proxy(target) {
  const u = new URL(target);
  const sockets = new Set();
  const srv = createServer((client) => {
    const upstream = connect(Number(u.port), u.hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${srv.address().port}${u.pathname}`,
    cut() {
      srv.close();
      for (const s of sockets) s.destroy();
    },
  };
}

test('falls through the node list past a dead node', async (t) => {
  const { c, vac } = await env();
  const id = `fall-${uniq()}`;
  const w = watch();
  const d = start(t, { service: 'vacuum', token: await c.token(id), nodes: [await deadUrl(), c.nodes[1]], ...w.opts });
  const welcome = await d.waitConnected({ timeoutMs: 15_000 });
  assert.equal(welcome.node, 'node-2');
  assert.equal(d.stats().attempts, 2);
  assert.ok(w.ev.errors.some((e) => e.code === ErrorCode.CONNECT));
  assert.equal((await vac.pushDevice(id, { x: 1 })).status, 'acked');
});

test('recovers from a lost node on another node of the list', async (t) => {
  const { c, vac } = await env();
  const id = `lost-${uniq()}`;
  const p = await proxy(c.nodes[0]);
  const w = watch();
  const d = start(t, { service: 'vacuum', token: await c.token(id), nodes: [p.url, c.nodes[1]], ...w.opts });
  const first = await d.waitConnected({ timeoutMs: 15_000 });
  assert.equal(first.node, 'node-1');
  p.cut();
  await w.wait(() => w.ev.welcomes.length === 2, 'a new welcome', 15_000);
  assert.equal(w.ev.closes[0].code, 1006);
  assert.equal(d.welcome.node, 'node-2');
  const r = await vac.pushDevice(id, { x: 1 }, { timeoutMs: 10_000 });
  assert.equal(r.status, 'acked');
  assert.deepEqual(r.nodes, ['node-2']);
  assert.equal(d.stats().reconnects, 1);
});

test('the directory resolves the tier from the client ID', async (t) => {
  const { c } = await env();
  // The dev seed maps vacuum-0001 to the paid tier, served by node-1 alone.
  const d = start(t, { service: 'vacuum', clientId: 'vacuum-0001', token: await c.token('vacuum-0001', { tier: 'paid' }), directoryUrl: c.directoryUrl });
  const w = await d.waitConnected({ timeoutMs: 15_000 });
  assert.equal(w.node, 'node-1');
  assert.equal(w.tier, 'paid');
});

test('a directory error (unknown service) is reported and retried, not fatal', async (t) => {
  const { c } = await env();
  const w = watch();
  const d = start(t, { service: 'ghost', token: 'x', directoryUrl: c.directoryUrl, ...w.opts });
  await w.wait(() => w.ev.errors.filter((e) => e.code === ErrorCode.DIRECTORY).length >= 2, 'two directory errors');
  const e = w.ev.errors.find((x) => x.code === ErrorCode.DIRECTORY);
  assert.equal(e.status, 404);
  assert.equal(e.directoryCode, 'unknown_service');
  assert.notEqual(d.state, 'stopped');
});

for (const auth of ['query', 'frame', 'header']) {
  test(`auth "${auth}" works against a real node`, async (t) => {
    const { c, vac } = await env();
    const id = `auth-${auth}-${uniq()}`;
    const d = start(t, { service: 'vacuum', auth, token: await c.token(id), nodes: [c.nodes[0]] });
    const w = await d.waitConnected({ timeoutMs: 15_000 });
    assert.equal(w.device, id);
    assert.equal((await vac.pushConn(w.conn, 'x', { timeoutMs: 10_000 })).status, 'acked');
  });
}

test('an expired token is refreshed through tokenFn (4002), then the device connects', async (t) => {
  const { c } = await env();
  const id = `exp-${uniq()}`;
  const tokens = [c.expiredToken(id), await c.token(id)];
  const w = watch();
  const d = start(t, { service: 'vacuum', tokenFn: () => tokens.shift(), nodes: [c.nodes[0]], ...w.opts });
  const welcome = await d.waitConnected({ timeoutMs: 15_000 });
  assert.equal(welcome.device, id);
  assert.deepEqual(w.ev.closes, [{ code: 4002, reason: 'token_expired' }]);
  // With a fixed expired token, the device stops.
  const d2 = start(t, { service: 'vacuum', token: c.expiredToken(id), nodes: [c.nodes[0]] });
  const err = await d2.done;
  assert.equal(err.code, ErrorCode.REFUSED);
  assert.equal(err.closeCode, 4002);
});

test('a token of another service is forbidden (4003), terminally', async (t) => {
  const { c } = await env();
  const d = start(t, { service: 'vacuum', auth: 'frame', token: await c.token(`ac-${uniq()}`, { service: 'aircon' }), nodes: [c.nodes[0]] });
  const err = await d.done;
  assert.equal(err.code, ErrorCode.REFUSED);
  assert.equal(err.closeCode, 4003);
});

test('a newer connection of the device replaces the older one (4005), which stops', async (t) => {
  const { c, vac } = await env();
  const id = `rep-${uniq()}`;
  const token = await c.token(id);
  const first = start(t, { service: 'vacuum', token, nodes: [c.nodes[0]] });
  await first.waitConnected({ timeoutMs: 15_000 });
  const second = start(t, { service: 'vacuum', token, nodes: [c.nodes[1]] });
  const w2 = await second.waitConnected({ timeoutMs: 15_000 });
  const err = await first.done;
  assert.equal(err.code, ErrorCode.REPLACED);
  assert.equal(err.closeCode, 4005);
  const r = await vac.pushDevice(id, { x: 1 }, { timeoutMs: 10_000 });
  assert.equal(r.status, 'acked');
  assert.equal(r.acks[0].conn, w2.conn);
});

test('frames over max_frame are refused before sending; the connection stays up', async (t) => {
  const { c, vac } = await env();
  const d = start(t, { service: 'vacuum', token: await c.token(`big-${uniq()}`), nodes: [c.nodes[0]] });
  const w = await d.waitConnected({ timeoutMs: 15_000 });
  await assert.rejects(d.send('x'.repeat(w.max_frame)), (err) => err.code === ErrorCode.TOO_BIG);
  assert.deepEqual(await d.send({ ok: true }, 'after-big'), { type: 'ack', id: 'after-big', result: 'ok' });
  assert.equal((await vac.pushConn(w.conn, {}, { timeoutMs: 10_000 })).status, 'acked');
  assert.equal(d.stats().connects, 1);
});
