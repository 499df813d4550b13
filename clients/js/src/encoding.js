// Byte, UTF-8, base64 and payload helpers shared by the device and the app
// side. No Node imports: this file runs in browsers as is.
import { TetherError, ErrorCode } from './errors.js';

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

/** @param {string} s @returns {Uint8Array} */
export function utf8(s) {
  return textEncoder.encode(s);
}

/** @param {Uint8Array} b @returns {string} */
export function fromUtf8(b) {
  return textDecoder.decode(b);
}

/** Byte length of s in UTF-8, without allocating for ASCII-only strings. */
export function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 2; // 4 bytes for 2 UTF-16 units
        i++;
        continue;
      }
      n += 2;
    } else n += 2;
  }
  return n;
}

/**
 * Views any byte container (Uint8Array, Node Buffer, ArrayBuffer, other
 * typed arrays, DataView) as a Uint8Array; null for anything else.
 * @param {unknown} v
 * @returns {Uint8Array | null}
 */
export function asBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (typeof SharedArrayBuffer !== 'undefined' && v instanceof SharedArrayBuffer) return new Uint8Array(v);
  return null;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64INV = new Int16Array(128).fill(-1);
for (let i = 0; i < B64.length; i++) B64INV[B64.charCodeAt(i)] = i;

/** Standard base64 with padding (what the node sends and expects). */
export function toBase64(bytes) {
  let out = '';
  let i = 0;
  const n = bytes.length;
  const parts = [];
  for (; i + 2 < n; i += 3) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[v >> 18] + B64[(v >> 12) & 63] + B64[(v >> 6) & 63] + B64[v & 63];
    if (out.length >= 8192) {
      parts.push(out);
      out = '';
    }
  }
  if (i < n) {
    const v = (bytes[i] << 16) | (i + 1 < n ? bytes[i + 1] << 8 : 0);
    out += B64[v >> 18] + B64[(v >> 12) & 63] + (i + 1 < n ? B64[(v >> 6) & 63] : '=') + '=';
  }
  parts.push(out);
  return parts.join('');
}

/**
 * Decodes standard base64 (padding required, as Go's StdEncoding). Throws a
 * TypeError on anything else.
 * @param {string} s
 * @returns {Uint8Array}
 */
export function fromBase64(s) {
  if (typeof s !== 'string') throw new TypeError('base64 data is not a string');
  if (s.length % 4 !== 0) throw new TypeError(`base64 data has length ${s.length}, not a multiple of 4`);
  let pad = 0;
  if (s.length > 0 && s[s.length - 1] === '=') pad++;
  if (s.length > 1 && s[s.length - 2] === '=') pad++;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    const last = i + 4 === s.length;
    const a = code(s, i), b = code(s, i + 1);
    const c = last && pad >= 2 ? 0 : code(s, i + 2);
    const d = last && pad >= 1 ? 0 : code(s, i + 3);
    const v = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = v >> 16;
    if (o < out.length) out[o++] = (v >> 8) & 255;
    if (o < out.length) out[o++] = v & 255;
  }
  return out;
}

function code(s, i) {
  const c = s.charCodeAt(i);
  const v = c < 128 ? B64INV[c] : -1;
  if (v < 0) throw new TypeError(`base64 data has ${JSON.stringify(s[i])} at ${i}`);
  return v;
}

/** Reports whether b is valid UTF-8. */
export function isUtf8(b) {
  try {
    strictDecoder.decode(b);
    return true;
  } catch {
    return false;
  }
}

/**
 * If b is valid UTF-8 holding one JSON value, returns that JSON text (without
 * surrounding white space); otherwise null. This is the node's rule for
 * embedding data as is (protocol.appendData).
 * @param {Uint8Array} b
 * @returns {string | null}
 */
export function jsonText(b) {
  if (b.length === 0) return null;
  let s;
  try {
    s = strictDecoder.decode(b);
  } catch {
    return null;
  }
  try {
    JSON.parse(s);
  } catch {
    return null;
  }
  return s.trim();
}

/**
 * The app-side rule for push payloads: bytes are sent as they are, strings
 * as UTF-8, undefined as the empty payload, anything else JSON-encoded.
 * @param {unknown} data
 * @returns {Uint8Array}
 */
export function payloadBytes(data) {
  if (data === undefined) return new Uint8Array(0);
  const b = asBytes(data);
  if (b) return b;
  if (typeof data === 'string') return utf8(data);
  let s;
  try {
    s = JSON.stringify(data);
  } catch (err) {
    throw new TetherError(ErrorCode.BAD_OPTION, `tether: data cannot be JSON-encoded: ${err.message}`, { cause: err });
  }
  if (s === undefined) {
    throw new TetherError(ErrorCode.BAD_OPTION, `tether: data of type ${typeof data} cannot be JSON-encoded`);
  }
  return utf8(s);
}

/**
 * The device-side rule for msg and ack data, the same as the Go client's:
 * the value becomes bytes as payloadBytes says, then bytes that are valid
 * UTF-8 JSON are embedded as is, and other bytes go base64-encoded with
 * "enc":"base64". Values that are not bytes or strings are JSON-encoded
 * directly. Returns the JSON members to append to a frame: "" for no data,
 * or ',"data":...' (with ',"enc":"base64"' first when encoded).
 * @param {unknown} data
 * @returns {string}
 */
export function frameDataMembers(data) {
  if (data === undefined) return '';
  const b = asBytes(data);
  if (b === null && typeof data !== 'string') {
    let s;
    try {
      s = JSON.stringify(data);
    } catch (err) {
      throw new TetherError(ErrorCode.BAD_OPTION, `tether: data cannot be JSON-encoded: ${err.message}`, { cause: err });
    }
    if (s === undefined) {
      throw new TetherError(ErrorCode.BAD_OPTION, `tether: data of type ${typeof data} cannot be JSON-encoded`);
    }
    return ',"data":' + s;
  }
  const bytes = b ?? utf8(/** @type {string} */ (data));
  if (bytes.length === 0) return ',"data":null';
  const text = jsonText(bytes);
  if (text !== null) return ',"data":' + text;
  return ',"enc":"base64","data":"' + toBase64(bytes) + '"';
}
