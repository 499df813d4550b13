import test from 'node:test';
import assert from 'node:assert/strict';
import { validName, isValidName, nameProblem, validConnId, isValidConnId, TetherError, ErrorCode } from '../../src/index.js';

test('valid names are 1-128 bytes of [A-Za-z0-9_:@-]', () => {
  for (const s of ['a', 'vacuum', 'vac-001', 'a_b', 'x:y', 'me@home', 'A'.repeat(128), '0']) {
    assert.equal(isValidName(s), true, s);
    assert.equal(validName(s), s);
  }
});

test('invalid names are refused with a clear bad_name error', () => {
  const cases = [
    ['', /is empty/],
    ['a'.repeat(129), /129 bytes long, at most 128/],
    ['bad.name', /'\.' at byte 3/],
    ['a b', /' ' at byte 1/],
    ['a*', /'\*' at byte 1/],
    ['a>', /'>' at byte 1/],
    ['é', /byte 0xc3 at byte 0/],
    ['x\n', /byte 0x0a at byte 1/],
    [42, /is a number/],
    [null, /is a null/],
    [undefined, /is a undefined/],
  ];
  for (const [s, re] of cases) {
    assert.equal(isValidName(s), false, String(s));
    assert.match(nameProblem(s), re);
    assert.throws(() => validName(s, 'device'), (err) => {
      assert.ok(err instanceof TetherError);
      assert.equal(err.code, ErrorCode.BAD_NAME);
      assert.match(err.message, /invalid device/);
      assert.match(err.message, re);
      return true;
    });
  }
  // 64 two-byte characters are 128 bytes but invalid anyway; 65 are too long.
  assert.match(nameProblem('é'.repeat(65)), /130 bytes long/);
});

test('connection IDs are <node>.<local>', () => {
  for (const id of ['node-1.k2x9f0a7', 'n.1', 'node_1@x.ABCdef123']) assert.equal(isValidConnId(id), true, id);
  const bad = [
    ['node-1', /not <node>\.<local>/],
    ['node-1.', /not <node>\.<local>/],
    ['.abc', /node part that is empty/],
    ['no de.abc', /node part that has ' '/],
    ['node-1.ab-c', /'-' in its local part/],
    ['node-1.a.b', /'\.' in its local part/],
    ['node-1.*', /'\*' in its local part/],
    ['n.' + 'a'.repeat(129), /local part of 129 bytes/],
  ];
  for (const [id, re] of bad) {
    assert.equal(isValidConnId(id), false, id);
    assert.throws(() => validConnId(id), (err) => err.code === ErrorCode.BAD_CONN_ID && re.test(err.message), id);
  }
});
