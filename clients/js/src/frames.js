// Frames of the device protocol (docs/protocol.md): encoding of what a
// device sends, decoding of what a node sends. No Node imports.
import { frameDataMembers, fromBase64, utf8, fromUtf8, asBytes } from './encoding.js';

/** The WebSocket subprotocol of protocol version 1. */
export const SUBPROTOCOL = 'tether.v1';

/** @param {string} token @param {string} [service] */
export function authFrame(token, service) {
  return '{"type":"auth","token":' + JSON.stringify(token) + (service ? ',"service":' + JSON.stringify(service) : '') + '}';
}

/**
 * An ack of push id, with result (default "ok") and optional data.
 * @param {string} id @param {string} [result] @param {unknown} [data]
 */
export function ackFrame(id, result = 'ok', data = undefined) {
  return '{"type":"ack","id":' + JSON.stringify(id) + ',"result":' + JSON.stringify(result) + frameDataMembers(data) + '}';
}

/**
 * An upstream message. data undefined is sent as null (the empty message).
 * @param {unknown} data @param {string} [id]
 */
export function msgFrame(data, id) {
  const members = data === undefined ? ',"data":null' : frameDataMembers(data);
  return '{"type":"msg"' + (id !== undefined && id !== '' ? ',"id":' + JSON.stringify(id) : '') + members + '}';
}

/** An application-level ping. @param {string} [id] */
export function pingFrame(id) {
  return id ? '{"type":"ping","id":' + JSON.stringify(id) + '}' : '{"type":"ping"}';
}

/**
 * Decodes one frame from a node: a text frame, or a binary frame holding
 * JSON. Returns the frame object, or throws a TypeError when it is not a
 * JSON object with a string "type".
 * @param {string | ArrayBuffer | Uint8Array} data
 * @returns {Record<string, any> & {type: string}}
 */
export function decodeFrame(data) {
  let text;
  if (typeof data === 'string') text = data;
  else {
    const b = asBytes(data);
    if (!b) throw new TypeError(`frame of type ${typeof data}`);
    text = fromUtf8(b);
  }
  let f;
  try {
    f = JSON.parse(text);
  } catch (err) {
    throw new TypeError(`frame is not JSON: ${err.message}`);
  }
  if (f === null || typeof f !== 'object' || Array.isArray(f)) throw new TypeError('frame is not a JSON object');
  if (typeof f.type !== 'string' || f.type === '') throw new TypeError('frame has no "type"');
  return f;
}

/** A push as the device's onPush handler receives it. */
export class Push {
  /**
   * @param {Record<string, any>} f the push frame
   * @param {number} received when it was read (Date.now())
   */
  constructor(f, received) {
    /** The node's delivery ID, echoed in the ack. @type {string} */
    this.id = String(f.id ?? '');
    /** The app's message ID, when it gave one. @type {string | undefined} */
    this.msgId = typeof f.msg_id === 'string' && f.msg_id !== '' ? f.msg_id : undefined;
    /** True when the app asked for no ack: the device sends none. */
    this.noAck = f.no_ack === true;
    /** True when the payload came base64-encoded (bytes that are not JSON); data is then a Uint8Array. */
    this.binary = f.enc === 'base64';
    /**
     * The payload: the JSON value the app sent, or, when binary, its bytes.
     * An empty payload is null.
     * @type {unknown}
     */
    this.data = this.binary ? fromBase64(f.data) : f.data === undefined ? null : f.data;
    /** When the frame was read, in ms since the epoch. */
    this.received = received;
  }

  /** The payload as bytes: the JSON text as UTF-8, or the decoded bytes. */
  bytes() {
    if (this.data instanceof Uint8Array) return this.data;
    if (this.data === null) return new Uint8Array(0);
    return utf8(JSON.stringify(this.data));
  }

  /** The payload as text: the JSON text, or the bytes decoded as UTF-8. */
  text() {
    return fromUtf8(this.bytes());
  }
}
