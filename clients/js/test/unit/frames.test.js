import test from 'node:test';
import assert from 'node:assert/strict';
import { ackFrame, msgFrame, authFrame, pingFrame, decodeFrame, Push } from '../../src/frames.js';

test('device frames are the JSON docs/protocol.md gives', () => {
  assert.deepEqual(JSON.parse(authFrame('tok', 'vacuum')), { type: 'auth', token: 'tok', service: 'vacuum' });
  assert.deepEqual(JSON.parse(authFrame('tok')), { type: 'auth', token: 'tok' });
  assert.deepEqual(JSON.parse(ackFrame('17')), { type: 'ack', id: '17', result: 'ok' });
  assert.deepEqual(JSON.parse(ackFrame('17', 'busy', { t: 1 })), { type: 'ack', id: '17', result: 'busy', data: { t: 1 } });
  assert.deepEqual(JSON.parse(ackFrame('17', 'ok', new Uint8Array([255]))), { type: 'ack', id: '17', result: 'ok', enc: 'base64', data: '/w==' });
  assert.deepEqual(JSON.parse(msgFrame({ temp: 21 }, 'u-1')), { type: 'msg', id: 'u-1', data: { temp: 21 } });
  assert.deepEqual(JSON.parse(msgFrame(undefined)), { type: 'msg', data: null });
  assert.deepEqual(JSON.parse(msgFrame('raw text')), { type: 'msg', enc: 'base64', data: 'cmF3IHRleHQ=' });
  assert.deepEqual(JSON.parse(pingFrame('p1')), { type: 'ping', id: 'p1' });
  assert.deepEqual(JSON.parse(pingFrame()), { type: 'ping' });
  // Strings needing escapes stay valid JSON.
  assert.deepEqual(JSON.parse(ackFrame('a"b\\', 'r\n\u2028')), { type: 'ack', id: 'a"b\\', result: 'r\n\u2028' });
});

test('decodeFrame accepts text and binary JSON objects with a type, nothing else', () => {
  assert.deepEqual(decodeFrame('{"type":"pong","id":"p1"}'), { type: 'pong', id: 'p1' });
  assert.deepEqual(decodeFrame(new TextEncoder().encode('{"type":"x"}').buffer), { type: 'x' });
  assert.deepEqual(decodeFrame(Buffer.from('{"type":"y","z":1}')), { type: 'y', z: 1 });
  for (const bad of ['', 'nope', '[]', 'null', '{"id":"1"}', '{"type":""}', '{"type":3}', '"push"']) {
    assert.throws(() => decodeFrame(bad), TypeError, bad);
  }
});

test('Push decodes JSON, base64 and empty payloads', () => {
  const j = new Push({ type: 'push', id: '5', msg_id: 'm-1', data: { cmd: 'go' } }, 1);
  assert.equal(j.id, '5');
  assert.equal(j.msgId, 'm-1');
  assert.equal(j.noAck, false);
  assert.equal(j.binary, false);
  assert.deepEqual(j.data, { cmd: 'go' });
  assert.equal(j.text(), '{"cmd":"go"}');
  const b = new Push({ type: 'push', id: '6', enc: 'base64', data: 'AAH/', no_ack: true }, 1);
  assert.equal(b.binary, true);
  assert.equal(b.noAck, true);
  assert.equal(b.msgId, undefined);
  assert.deepEqual(b.data, new Uint8Array([0, 1, 255]));
  assert.deepEqual(b.bytes(), new Uint8Array([0, 1, 255]));
  const e = new Push({ type: 'push', id: '7', data: null }, 1);
  assert.equal(e.data, null);
  assert.deepEqual(e.bytes(), new Uint8Array(0));
  assert.throws(() => new Push({ type: 'push', id: '8', enc: 'base64', data: '***' }, 1), TypeError);
});
