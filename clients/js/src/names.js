// Name validation, as docs/subjects.md states it: service, device, group,
// tier, node, client and queue names are single NATS subject tokens of 1 to
// 128 bytes of ASCII letters, digits, '-', '_', ':' and '@'. A connection ID
// is <node>.<local>: a valid node name, a dot, and 1 to 128 ASCII letters and
// digits.
import { TetherError, ErrorCode } from './errors.js';

/** The longest name, in bytes. */
export const MAX_NAME_LEN = 128;

function nameByte(c) {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x2d || c === 0x5f || c === 0x3a || c === 0x40;
}

function alnum(c) {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39);
}

const enc = new TextEncoder();

function describe(bytes, i) {
  const c = bytes[i];
  if (c >= 0x20 && c < 0x7f) return `'${String.fromCharCode(c)}'`;
  return `byte 0x${c.toString(16).padStart(2, '0')}`;
}

/**
 * Returns why s is not a valid name, or null when it is one.
 * @param {unknown} s
 * @returns {string | null}
 */
export function nameProblem(s) {
  if (typeof s !== 'string') return `is a ${s === null ? 'null' : typeof s}, not a string`;
  if (s === '') return 'is empty';
  const b = enc.encode(s);
  if (b.length > MAX_NAME_LEN) return `is ${b.length} bytes long, at most ${MAX_NAME_LEN}`;
  for (let i = 0; i < b.length; i++) {
    if (!nameByte(b[i])) return `has ${describe(b, i)} at byte ${i}, outside [A-Za-z0-9_:@-]`;
  }
  return null;
}

/** Reports whether s is a valid name. */
export function isValidName(s) {
  return nameProblem(s) === null;
}

/**
 * Throws a TetherError (code bad_name) when s is not a valid name.
 * @param {unknown} s
 * @param {string} what what the name is, for the message ("service", "device"...)
 * @returns {string} s
 */
export function validName(s, what = 'name') {
  const p = nameProblem(s);
  if (p !== null) {
    throw new TetherError(ErrorCode.BAD_NAME, `tether: invalid ${what} ${quote(s)}: it ${p}`, { what });
  }
  return /** @type {string} */ (s);
}

/**
 * Returns why id is not a valid connection ID, or null when it is one.
 * @param {unknown} id
 */
export function connIdProblem(id) {
  if (typeof id !== 'string') return `is a ${id === null ? 'null' : typeof id}, not a string`;
  const dot = id.indexOf('.');
  if (dot < 0 || dot === id.length - 1) return 'is not <node>.<local>';
  const p = nameProblem(id.slice(0, dot));
  if (p !== null) return `has a node part that ${p}`;
  const b = enc.encode(id.slice(dot + 1));
  if (b.length > MAX_NAME_LEN) return `has a local part of ${b.length} bytes, at most ${MAX_NAME_LEN}`;
  for (let i = 0; i < b.length; i++) {
    if (!alnum(b[i])) return `has ${describe(b, i)} in its local part (letters and digits only)`;
  }
  return null;
}

/** Reports whether id is a valid connection ID. */
export function isValidConnId(id) {
  return connIdProblem(id) === null;
}

/**
 * Throws a TetherError (code bad_conn_id) when id is not <node>.<local>.
 * @param {unknown} id
 * @returns {string} id
 */
export function validConnId(id) {
  const p = connIdProblem(id);
  if (p !== null) {
    throw new TetherError(ErrorCode.BAD_CONN_ID, `tether: invalid connection ID ${quote(id)}: it ${p}`);
  }
  return /** @type {string} */ (id);
}

/**
 * Validates a subject prefix: one or more dot-separated valid names.
 * @param {unknown} prefix
 */
export function validPrefix(prefix) {
  if (typeof prefix !== 'string' || prefix === '') {
    throw new TetherError(ErrorCode.BAD_OPTION, `tether: prefix ${quote(prefix)} must be a non-empty string`);
  }
  for (const tok of prefix.split('.')) {
    const p = nameProblem(tok);
    if (p !== null) {
      throw new TetherError(ErrorCode.BAD_OPTION, `tether: prefix ${quote(prefix)}: token ${quote(tok)} ${p}`);
    }
  }
  return prefix;
}

/** @param {unknown} v */
export function quote(v) {
  if (typeof v === 'string') return JSON.stringify(v.length > 200 ? v.slice(0, 200) + '...' : v);
  try {
    return String(v);
  } catch {
    return typeof v;
  }
}
