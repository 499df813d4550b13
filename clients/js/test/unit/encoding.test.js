import test from 'node:test';
import assert from 'node:assert/strict';
import { toBase64, fromBase64, frameDataMembers, payloadBytes, jsonText, utf8Length, utf8 } from '../../src/encoding.js';

test('base64 matches Node Buffer for every length and byte', () => {
  for (let n = 0; n < 70; n++) {
    const b = new Uint8Array(n).map((_, i) => (i * 37 + n * 11) & 255);
    const want = Buffer.from(b).toString('base64');
    assert.equal(toBase64(b), want, `length ${n}`);
    assert.deepEqual(fromBase64(want), b);
  }
  const big = new Uint8Array(100_000).map((_, i) => i & 255);
  assert.equal(toBase64(big), Buffer.from(big).toString('base64'));
});

test('fromBase64 refuses what Go StdEncoding refuses', () => {
  for (const s of ['abc', 'ab=c', 'a*==', 'YQ', 'é===']) assert.throws(() => fromBase64(s), TypeError, s);
});

test('device data follows the Go client rule: UTF-8 JSON embedded, other bytes base64', () => {
  assert.equal(frameDataMembers(undefined), '');
  assert.equal(frameDataMembers({ a: 1 }), ',"data":{"a":1}');
  assert.equal(frameDataMembers([1, 'x']), ',"data":[1,"x"]');
  assert.equal(frameDataMembers(7), ',"data":7');
  assert.equal(frameDataMembers(null), ',"data":null');
  assert.equal(frameDataMembers(false), ',"data":false');
  // Strings are UTF-8 bytes: JSON text embedded, plain text base64.
  assert.equal(frameDataMembers('{"a": 1} '), ',"data":{"a": 1}');
  assert.equal(frameDataMembers('hello'), ',"enc":"base64","data":"aGVsbG8="');
  assert.equal(frameDataMembers(''), ',"data":null');
  // Bytes likewise.
  assert.equal(frameDataMembers(utf8('[1,2]')), ',"data":[1,2]');
  assert.equal(frameDataMembers(new Uint8Array([0, 1, 255])), ',"enc":"base64","data":"AAH/"');
  assert.equal(frameDataMembers(Buffer.from('"q"')), ',"data":"q"');
  assert.equal(frameDataMembers(new Uint8Array([0x22, 0xff, 0x22])), ',"enc":"base64","data":"Iv8i"', 'JSON-looking but not UTF-8');
  assert.equal(frameDataMembers(new Uint16Array([0x3131]).buffer), ',"data":11');
  assert.throws(() => frameDataMembers(10n), /cannot be JSON-encoded/);
  assert.throws(() => frameDataMembers(() => 1), /cannot be JSON-encoded/);
});

test('app payloads: bytes as is, strings UTF-8, others JSON, undefined empty', () => {
  const b = new Uint8Array([1, 2, 3]);
  assert.equal(payloadBytes(b), b);
  const buf = Buffer.from([9]);
  assert.equal(payloadBytes(buf), buf, 'a Buffer is sent as it is');
  assert.deepEqual(payloadBytes('héllo'), utf8('héllo'));
  assert.deepEqual(payloadBytes({ cmd: 'start' }), utf8('{"cmd":"start"}'));
  assert.deepEqual(payloadBytes(null), utf8('null'));
  assert.deepEqual(payloadBytes(undefined), new Uint8Array(0));
  assert.throws(() => payloadBytes(Symbol('x')), /cannot be JSON-encoded/);
});

test('jsonText and utf8Length', () => {
  assert.equal(jsonText(utf8(' {"a":1}\n')), '{"a":1}');
  assert.equal(jsonText(utf8('nope')), null);
  assert.equal(jsonText(new Uint8Array(0)), null);
  for (const s of ['', 'abc', 'é', '€', '😀', 'a😀é€', '\ud800x', 'x\udc00']) {
    assert.equal(utf8Length(s), utf8(s).length, JSON.stringify(s));
  }
});
