// The device against fake nodes (a local `ws` server each test scripts):
// frames, auth modes, acks, close codes, reconnect frames, node lists,
// backoff, the directory, and bad options.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Device, ErrorCode, TetherError } from '../../src/index.js';
import { fakeNode, deadUrl, watch } from '../helpers/fake-node.js';

const fast = { minBackoff: 1, maxBackoff: 20, connectTimeout: 5000 };

/** A device started with the given options; stopped after the test. */
function device(t, opts) {
  const d = new Device({ ...(opts.tokenFn ? {} : { token: 'tok' }), ...fast, ...opts });
  t.after(() => d.stop());
  return d;
}

test('connects, authenticates with ?token= and ?service=, offers tether.v1, and gets its welcome', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { service: 'vacuum', token: 'the token', nodes: [node.url], ...w.opts }).start();
  const welcome = await d.waitConnected();
  assert.equal(welcome.conn, 'fake-1.c1');
  assert.deepEqual(d.welcome, welcome);
  assert.equal(d.connected, true);
  assert.equal(d.state, 'connected');
  const c = await node.conn(1);
  assert.equal(c.url.searchParams.get('token'), 'the token');
  assert.equal(c.url.searchParams.get('service'), 'vacuum');
  assert.equal(c.ws.protocol, 'tether.v1');
  assert.equal(c.req.headers.authorization, undefined);
  assert.equal(w.ev.welcomes.length, 1);
  const s = d.stats();
  assert.equal(s.connects, 1);
  assert.equal(s.attempts, 1);
  assert.equal(s.conn, 'fake-1.c1');
  assert.equal(s.node, 'fake-1');
});

test('auth "frame" sends the token and service in the first frame, not in the URL', async (t) => {
  const node = await fakeNode(async (c) => {
    const f = await c.frame({ type: 'auth' });
    if (f.token === 'tok-f' && f.service === 'vacuum') c.welcome();
    else c.close(4001, 'bad_token');
  });
  t.after(() => node.close());
  const d = device(t, { service: 'vacuum', token: 'tok-f', auth: 'frame', nodes: [node.url] }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  assert.equal(c.url.searchParams.get('token'), null);
  assert.equal(c.frames[0].type, 'auth', 'auth is the first frame');
});

test('auth "header" sends Authorization: Bearer', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  const d = device(t, { token: 'tok-h', auth: 'header', nodes: [node.url] }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  assert.equal(c.req.headers.authorization, 'Bearer tok-h');
  assert.equal(c.url.searchParams.get('token'), null);
});

test('pushes are handed over in order and acked with result and data; no_ack pushes are not acked', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  const seen = [];
  const w = watch({
    onPush: async (p) => {
      seen.push(p);
      if (p.binary) return { result: 'echo', data: p.bytes() };
      if (p.data?.slow) await new Promise((r) => setTimeout(r, 30)); // the next push must wait
      if (p.data?.throw) throw new Error('boom');
      if (p.data?.text) return { data: 'plain text' };
      if (p.data?.result) return p.data.result;
      return { result: 'done', data: { got: p.data } };
    },
  });
  const d = w.attach(device(t, { nodes: [node.url], ...w.opts })).start();
  await d.waitConnected();
  const c = await node.conn(1);
  c.send({ type: 'push', id: '1', msg_id: 'm-1', data: { slow: true } });
  c.send({ type: 'push', id: '2', data: { result: 'busy' } });
  c.send({ type: 'push', id: '3', enc: 'base64', data: 'AAH/' });
  c.send({ type: 'push', id: '4', no_ack: true, data: 5 });
  c.send({ type: 'push', id: '5', data: { throw: true } });
  c.send({ type: 'push', id: '6', data: { text: true } });
  c.send({ type: 'push', id: '7', data: null });
  await c.frame({ type: 'ack', id: '7' });
  const acks = c.frames.filter((f) => f.type === 'ack');
  assert.deepEqual(acks.map((f) => f.id), ['1', '2', '3', '5', '6', '7'], 'in order, none for the no_ack push');
  assert.deepEqual(acks[0], { type: 'ack', id: '1', result: 'done', data: { got: { slow: true } } });
  assert.deepEqual(acks[1], { type: 'ack', id: '2', result: 'busy' });
  assert.deepEqual(acks[2], { type: 'ack', id: '3', result: 'echo', enc: 'base64', data: 'AAH/' });
  assert.deepEqual(acks[3], { type: 'ack', id: '5', result: 'error' });
  assert.deepEqual(acks[4], { type: 'ack', id: '6', result: 'ok', enc: 'base64', data: Buffer.from('plain text').toString('base64') });
  assert.deepEqual(acks[5], { type: 'ack', id: '7', result: 'done', data: { got: null } });
  assert.equal(seen[0].msgId, 'm-1');
  assert.deepEqual(seen[2].data, new Uint8Array([0, 1, 255]));
  assert.equal(seen[3].noAck, true);
  assert.equal(w.ev.errors.filter((e) => e.code === ErrorCode.HANDLER).length, 1, 'the throw is reported');
  assert.deepEqual(w.ev.acks.map((a) => a.id), ['1', '2', '3', '5', '6', '7']);
  const s = d.stats();
  assert.equal(s.pushes, 7);
  assert.equal(s.acks, 6);
});

test('without onPush every push is acked "ok"; an ack over max_frame goes out as "too_big" without data', async (t) => {
  const node = await fakeNode((c) => c.welcome({ max_frame: 200 }));
  t.after(() => node.close());
  const w = watch({ onPush: (p) => (p.data === 'big' ? { data: 'x'.repeat(500) } : undefined) });
  const d = device(t, { nodes: [node.url], ...w.opts }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  c.send({ type: 'push', id: '1', data: 1 });
  c.send({ type: 'push', id: '2', data: 'big' });
  assert.deepEqual(await c.frame({ type: 'ack', id: '1' }), { type: 'ack', id: '1', result: 'ok' });
  assert.deepEqual(await c.frame({ type: 'ack', id: '2' }), { type: 'ack', id: '2', result: 'too_big' });
  assert.equal(w.ev.errors.at(-1).code, ErrorCode.TOO_BIG);
  // send refuses a frame over max_frame, before writing it.
  await assert.rejects(d.send('y'.repeat(300)), (err) => err.code === ErrorCode.TOO_BIG);
  assert.equal(c.count('msg'), 0);
  assert.equal(d.connected, true);
});

test('send: upstream msg frames; with an id, the node ack resolves and its error frame rejects', async (t) => {
  const node = await fakeNode((c) => {
    c.welcome();
    c.ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString());
      if (f.type !== 'msg' || !f.id) return;
      if (f.id === 'bad') c.send({ type: 'error', code: 'unavailable', message: 'NATS is down', id: f.id });
      else c.send({ type: 'ack', id: f.id, result: 'ok' });
    });
  });
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { nodes: [node.url], ...w.opts });
  await assert.rejects(d.send({ a: 1 }), (err) => err.code === ErrorCode.NOT_CONNECTED);
  d.start();
  await d.waitConnected();
  const c = await node.conn(1);
  assert.deepEqual(await d.send({ temp: 21 }, 'u-1'), { type: 'ack', id: 'u-1', result: 'ok' });
  await assert.rejects(d.send({ temp: 22 }, 'bad'), (err) => err.code === ErrorCode.NODE_ERROR && err.nodeCode === 'unavailable');
  assert.equal(await d.send(new Uint8Array([0xff])), undefined);
  await assert.rejects(d.send(1, ''), (err) => err.code === ErrorCode.BAD_OPTION);
  await c.frame({ type: 'msg', enc: 'base64' });
  assert.deepEqual(c.frames.filter((f) => f.type === 'msg'), [
    { type: 'msg', id: 'u-1', data: { temp: 21 } },
    { type: 'msg', id: 'bad', data: { temp: 22 } },
    { type: 'msg', enc: 'base64', data: '/w==' },
  ]);
  assert.equal(d.stats().sent, 3);
  assert.ok(w.ev.frames.some((f) => f.type === 'error' && f.id === 'bad'), 'error frames reach onFrame');
});

test('a pending send is rejected when the connection ends', async (t) => {
  const node = await fakeNode(); // never acks msgs
  t.after(() => node.close());
  const d = device(t, { nodes: [node.url] }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  const p = d.send({ a: 1 }, 'u-9');
  await c.frame({ type: 'msg' });
  c.close(1000);
  await assert.rejects(p, (err) => err.code === ErrorCode.CONNECTION_LOST && err.closeCode === 1000);
});

test('ping resolves with the pong of the same id', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  const d = device(t, { nodes: [node.url] }).start();
  await d.waitConnected();
  const pong = await d.ping();
  assert.equal(pong.type, 'pong');
  assert.match(pong.id, /^p\d+$/);
  assert.equal(d.stats().pongs, 1);
  const c = await node.conn(1);
  c.autoPong = false;
  await assert.rejects(d.ping({ timeoutMs: 50 }), (err) => err.code === ErrorCode.TIMEOUT);
});

test('stop closes with 1000 "stopped", resolves done with null, and rejects waiters', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  const w = watch();
  const d = new Device({ token: 't', nodes: [node.url], ...w.opts }).start();
  await d.waitConnected();
  const c = await node.conn(1);
  await d.stop();
  assert.deepEqual(await c.whenClosed(), { code: 1000, reason: 'stopped' });
  assert.equal(await d.done, null);
  assert.equal(d.state, 'stopped');
  assert.deepEqual(w.ev.stops, [null]);
  assert.deepEqual(w.ev.closes, [{ code: 1000, reason: 'stopped' }]);
  await assert.rejects(d.waitConnected(), (err) => err.code === ErrorCode.STOPPED);
  await d.stop(); // idempotent
  assert.throws(() => d.start(), (err) => err.code === ErrorCode.BAD_OPTION);
});

for (const [code, want] of [
  [4001, ErrorCode.REFUSED],
  [4002, ErrorCode.REFUSED],
  [4003, ErrorCode.REFUSED],
  [4004, ErrorCode.REFUSED],
  [4050, ErrorCode.REFUSED],
  [4005, ErrorCode.REPLACED],
]) {
  test(`close ${code} is terminal: the device stops, reports it, and tries no other node`, async (t) => {
    const refusing = await fakeNode((c) => c.close(code, 'no'));
    const other = await fakeNode();
    t.after(() => Promise.all([refusing.close(), other.close()]));
    const w = watch();
    const d = device(t, { nodes: [refusing.url, other.url], ...w.opts }).start();
    const err = await d.done;
    assert.ok(err instanceof TetherError);
    assert.equal(err.code, want);
    assert.equal(err.closeCode, code);
    assert.equal(err.reason, 'no');
    assert.equal(d.state, 'stopped');
    assert.deepEqual(w.ev.closes, [{ code, reason: 'no' }]);
    assert.equal(w.ev.stops[0], err);
    assert.equal(other.conns.length, 0);
    assert.equal(d.stats().attempts, 1);
    await assert.rejects(d.waitConnected(), (e) => e === err);
  });
}

test('4001 and 4002 with tokenFn: one fresh token, then connected; refused twice, stopped', async (t) => {
  const node = await fakeNode((c) => {
    const tok = c.url.searchParams.get('token');
    if (tok === 'expired') c.close(4002, 'token_expired');
    else if (tok === 'bad') c.close(4001, 'bad_token');
    else c.welcome();
  });
  t.after(() => node.close());
  const tokens = ['expired', 'good'];
  const w = watch();
  const d = device(t, { nodes: [node.url], tokenFn: async () => tokens.shift(), ...w.opts }).start();
  await d.waitConnected();
  assert.deepEqual(w.ev.closes.map((c) => c.code), [4002]);
  assert.equal(tokens.length, 0, 'tokenFn called twice');
  assert.equal(node.conns[1].url.searchParams.get('token'), 'good');

  let calls = 0;
  const d2 = device(t, { nodes: [node.url], tokenFn: () => (++calls === 1 ? 'expired' : 'bad') }).start();
  const err = await d2.done;
  assert.equal(err.code, ErrorCode.REFUSED);
  assert.equal(err.closeCode, 4001);
  assert.equal(calls, 2, 'one refresh only');
});

test('4100-4199 are transient: reconnect, to another node of the list', async (t) => {
  const first = await fakeNode((c) => {
    c.welcome();
    if (c.n === 1) setTimeout(() => c.close(4100, 'shutdown'), 10);
  });
  const second = await fakeNode();
  t.after(() => Promise.all([first.close(), second.close()]));
  const w = watch();
  const d = device(t, { nodes: [first.url, second.url], ...w.opts }).start();
  await w.wait(() => w.ev.welcomes.length === 2, 'a second welcome');
  assert.deepEqual(w.ev.closes, [{ code: 4100, reason: 'shutdown' }]);
  assert.equal(second.conns.length, 1, 'moved to the second node although the first is first');
  assert.equal(first.conns.length, 1);
  const s = d.stats();
  assert.equal(s.connects, 2);
  assert.equal(s.reconnects, 1);
});

test('a reconnect frame: wait after_ms, close, move to another node', async (t) => {
  let sentAt = 0;
  const mover = await fakeNode((c) => {
    c.welcome();
    sentAt = performance.now();
    c.send({ type: 'reconnect', reason: 'shutdown', after_ms: 150 });
  });
  const other = await fakeNode();
  t.after(() => Promise.all([mover.close(), other.close()]));
  const w = watch();
  const d = device(t, { nodes: [mover.url, other.url], ...w.opts }).start();
  const closed = await (await mover.conn(1)).whenClosed();
  const waited = performance.now() - sentAt;
  assert.ok(waited >= 145, `left after ${waited}ms, before after_ms`);
  assert.deepEqual(closed, { code: 1000, reason: 'reconnect' });
  await other.conn(1);
  await w.wait(() => w.ev.welcomes.length === 2, 'the welcome of the other node');
  assert.equal(mover.conns.length, 1, 'did not go back to the node that asked it to leave');
  assert.ok(w.ev.frames.some((f) => f.type === 'reconnect'));
  assert.deepEqual(w.ev.closes, [{ code: 1000, reason: 'reconnect' }]);
  assert.equal(d.stats().connects, 2);
});

test('falls through the node list: a dead node, one that never answers, then a live one', async (t) => {
  const dead = await deadUrl();
  const mute = await fakeNode(() => {}); // upgrades but never welcomes
  const live = await fakeNode();
  t.after(() => Promise.all([mute.close(), live.close()]));
  const w = watch();
  const d = w.attach(device(t, { nodes: [dead, mute.url, live.url], connectTimeout: 200, ...w.opts })).start();
  const welcome = await d.waitConnected();
  assert.equal(welcome.conn, 'fake-1.c1');
  assert.equal(d.stats().attempts, 3);
  assert.deepEqual(w.ev.backoffs, [], 'no backoff within a round');
  assert.ok(w.ev.errors.some((e) => e.code === ErrorCode.CONNECT && e.url === dead), 'the dead node is reported');
  assert.ok(w.ev.closes.some((c) => c.code === 1006 && /connect_timeout/.test(c.reason)), 'the mute node timed out');
});

test('failed rounds back off exponentially with full jitter, capped; a connection resets it', async (t) => {
  let refuse = true;
  const node = await fakeNode((c) => (refuse ? c.ws.terminate() : c.welcome()));
  t.after(() => node.close());
  const w = watch();
  // random just below 1: every delay is its ceiling.
  const d = w.attach(device(t, { nodes: [node.url], minBackoff: 1, maxBackoff: 16, random: () => 0.999999, ...w.opts })).start();
  await w.wait(() => w.ev.backoffs.length >= 7, '7 backoffs');
  assert.deepEqual(w.ev.backoffs.slice(0, 7), [1, 2, 4, 8, 16, 16, 16]);
  refuse = false;
  await d.waitConnected();
  const before = w.ev.backoffs.length;
  refuse = true;
  (await node.conn(node.conns.length)).ws.terminate(); // dropped
  await w.wait(() => w.ev.backoffs.length >= before + 4, 'backoffs after the drop');
  // After the drop: a short jitter (at most minBackoff), then from the start again.
  assert.deepEqual(w.ev.backoffs.slice(before, before + 4), [1, 1, 2, 4]);
  assert.equal(d.stats().reconnects, 1);
});

test('slow-consumer and internal closes reconnect with backoff, not at once', async (t) => {
  const node = await fakeNode((c) => {
    c.welcome();
    if (c.n <= 2) setTimeout(() => c.close(4104, 'internal'), 5);
  });
  t.after(() => node.close());
  const w = watch();
  const d = w.attach(device(t, { nodes: [node.url], minBackoff: 1, maxBackoff: 16, random: () => 0.999999, ...w.opts })).start();
  await w.wait(() => w.ev.welcomes.length === 3, 'three welcomes');
  assert.deepEqual(w.ev.backoffs, [1, 2], 'the backoff grows over slow closes');
  void d;
});

test('the directory gives the node list (service and client); its failure falls back on nodes and is reported', async (t) => {
  const node = await fakeNode();
  const fallback = await fakeNode();
  t.after(() => Promise.all([node.close(), fallback.close()]));
  const asked = [];
  let fail = false;
  const http = createServer((req, res) => {
    asked.push(req.url);
    if (fail) {
      res.writeHead(503, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'no_live_nodes', message: 'none' }));
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ service: 'vacuum', tier: 'paid', handshakeUrl: [node.url] }));
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => http.close(r)));
  const dir = `http://127.0.0.1:${http.address().port}/`;
  const d = device(t, { service: 'vacuum', clientId: 'dev-42', directoryUrl: dir }).start();
  await d.waitConnected();
  assert.deepEqual(asked, ['/v1/nodes?service=vacuum&client=dev-42']);
  await d.stop();

  fail = true;
  const w = watch();
  const d2 = device(t, { service: 'vacuum', directoryUrl: dir, nodes: [fallback.url], ...w.opts }).start();
  await d2.waitConnected();
  assert.equal(fallback.conns.length, 1);
  const e = w.ev.errors.find((x) => x.code === ErrorCode.DIRECTORY);
  assert.equal(e.status, 503);
  assert.equal(e.directoryCode, 'no_live_nodes');
});

test('a directory that does not answer times out and the device keeps trying', async (t) => {
  const http = createServer(() => {}); // never answers
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  t.after(() => {
    http.closeAllConnections?.();
    return new Promise((r) => http.close(r));
  });
  const w = watch();
  const d = w.attach(device(t, { service: 'vacuum', directoryUrl: `http://127.0.0.1:${http.address().port}`, directoryTimeout: 50, ...w.opts })).start();
  await w.wait(() => w.ev.errors.filter((e) => e.code === ErrorCode.DIRECTORY).length >= 2, 'two directory errors');
  assert.match(w.ev.errors[0].message, /no answer within 50ms/);
  assert.ok(w.ev.backoffs.length >= 1);
  await d.stop();
  assert.equal(await d.done, null);
});

test('tokenFn failures are reported and retried with backoff', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  let n = 0;
  const w = watch();
  const d = device(t, {
    nodes: [node.url],
    tokenFn: async () => {
      if (++n < 3) throw new Error('app server down');
      return 'tok';
    },
    ...w.opts,
  }).start();
  await d.waitConnected();
  assert.equal(w.ev.errors.filter((e) => e.code === ErrorCode.TOKEN).length, 2);
  assert.match(w.ev.errors[0].message, /app server down/);
});

test('frames that are not protocol frames are reported and skipped', async (t) => {
  const node = await fakeNode((c) => {
    c.send('not json');
    c.send('{"no":"type"}');
    c.welcome();
    c.send({ type: 'future', x: 1 });
  });
  t.after(() => node.close());
  const w = watch();
  const d = device(t, { nodes: [node.url], ...w.opts }).start();
  await d.waitConnected();
  await w.wait(() => w.ev.frames.some((f) => f.type === 'future'), 'the unknown frame in onFrame');
  assert.equal(w.ev.errors.filter((e) => e.code === ErrorCode.PROTOCOL).length, 2);
});

test('callbacks that throw are reported, not fatal', async (t) => {
  const node = await fakeNode();
  t.after(() => node.close());
  const errors = [];
  const d = device(t, {
    nodes: [node.url],
    onWelcome: () => {
      throw new Error('oops');
    },
    onError: (e) => errors.push(e),
  }).start();
  await d.waitConnected();
  assert.equal(errors[0].code, ErrorCode.HANDLER);
  assert.match(errors[0].message, /welcome callback threw: oops/);
  assert.equal(d.connected, true);
});

test('bad options are refused with clear errors', () => {
  const ok = { token: 't', nodes: ['ws://127.0.0.1:1/ws'] };
  const bad = [
    [undefined, ErrorCode.BAD_OPTION, /options are required/],
    [{ nodes: ok.nodes }, ErrorCode.BAD_OPTION, /token or tokenFn is required/],
    [{ token: '' , nodes: ok.nodes }, ErrorCode.BAD_OPTION, /token must be a non-empty string/],
    [{ token: 't' }, ErrorCode.BAD_OPTION, /directoryUrl or nodes is required/],
    [{ ...ok, nodes: [] }, ErrorCode.BAD_OPTION, /non-empty array/],
    [{ ...ok, nodes: ['http://x/ws'] }, ErrorCode.BAD_OPTION, /nodes\[0\] "http:\/\/x\/ws" is not a ws:\/\/ or wss:\/\/ URL/],
    [{ ...ok, nodes: ['::'] }, ErrorCode.BAD_OPTION, /is not a URL/],
    [{ ...ok, directoryUrl: 'ws://x' }, ErrorCode.BAD_OPTION, /not an http/],
    [{ token: 't', directoryUrl: 'http://x' }, ErrorCode.BAD_OPTION, /service or clientId is required/],
    [{ ...ok, service: 'vac.uum' }, ErrorCode.BAD_NAME, /invalid service "vac.uum"/],
    [{ ...ok, clientId: 'a b' }, ErrorCode.BAD_NAME, /invalid clientId/],
    [{ ...ok, auth: 'cookie' }, ErrorCode.BAD_OPTION, /auth must be/],
    [{ ...ok, minBackoff: -1 }, ErrorCode.BAD_OPTION, /minBackoff/],
    [{ ...ok, maxBackoff: 0 }, ErrorCode.BAD_OPTION, /maxBackoff/],
    [{ ...ok, minBackoff: 50, maxBackoff: 10 }, ErrorCode.BAD_OPTION, /minBackoff 50 is above maxBackoff 10/],
    [{ ...ok, connectTimeout: NaN }, ErrorCode.BAD_OPTION, /connectTimeout/],
    [{ ...ok, onPush: 'yes' }, ErrorCode.BAD_OPTION, /onPush must be a function/],
  ];
  for (const [opts, code, re] of bad) {
    assert.throws(() => new Device(opts), (err) => err instanceof TetherError && err.code === code && re.test(err.message), JSON.stringify(opts));
  }
});
