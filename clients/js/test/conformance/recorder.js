// Runs in Node and in the browser page: wraps a Device, records what
// happens to it as JSON-safe events, and answers pushes by a policy the
// push itself carries, so that the conformance checks (which run in Node)
// can drive a device living in either runtime with plain data.
//
// Push policy: a JSON push {"reply": {"result": R, "data": D}} is acked with
// R and D; a binary push is echoed back as the ack's data (result "echo");
// anything else is acked "ok".

/** Bytes cross the page boundary as {$bytes: base64}. */
export function toWire(v) {
  if (v instanceof Uint8Array) {
    let s = '';
    for (const b of v) s += String.fromCharCode(b);
    return { $bytes: btoa(s) };
  }
  return v;
}

export function fromWire(v) {
  if (v && typeof v === 'object' && typeof v.$bytes === 'string') {
    const s = atob(v.$bytes);
    const b = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
    return b;
  }
  return v;
}

function errInfo(e) {
  return e ? { code: e.code, message: e.message, closeCode: e.closeCode, nodeCode: e.nodeCode } : null;
}

export class Recorder {
  /**
   * @param {typeof import('../../src/device.js').Device} Device
   * @param {object} opts Device options (JSON-safe)
   */
  constructor(Device, opts) {
    this.events = [];
    this.waiters = new Set();
    this.device = new Device({
      ...opts,
      onPush: (p) => this.#onPush(p),
      onWelcome: (w) => this.#record('welcome', w),
      onClose: (code, reason) => this.#record('close', { code, reason }),
      onFrame: (f) => this.#record('frame', f),
      onError: (e) => this.#record('error', errInfo(e)),
      onStop: (e) => this.#record('stop', { error: errInfo(e) }),
    });
    this.device.on('ack', (a) => this.#record('ack', a));
  }

  #record(kind, data) {
    this.events.push({ kind, data: JSON.parse(JSON.stringify(data ?? null)) });
    for (const w of [...this.waiters]) w();
  }

  #onPush(p) {
    this.#record('push', { id: p.id, msgId: p.msgId ?? null, noAck: p.noAck, binary: p.binary, data: toWire(p.data) });
    if (p.binary) return { result: 'echo', data: p.bytes() };
    const reply = p.data && typeof p.data === 'object' ? p.data.reply : undefined;
    if (reply) return { result: reply.result, data: fromWire(reply.data) };
    return undefined;
  }

  start() {
    this.device.start();
    return true;
  }

  /** All events of a kind whose data has the given fields. */
  find(kind, match = {}) {
    return this.events
      .filter((e) => e.kind === kind && Object.entries(match).every(([k, v]) => e.data && e.data[k] === v))
      .map((e) => e.data);
  }

  /** The first event (past or future) of a kind whose data has the given fields. */
  waitFor(kind, match = {}, timeoutMs = 15_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const [hit] = this.find(kind, match);
        if (hit !== undefined) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`no ${kind} event matching ${JSON.stringify(match)} within ${timeoutMs}ms; events: ${JSON.stringify(this.events.map((e) => e.kind))}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  async send(data, id) {
    try {
      return { frame: (await this.device.send(fromWire(data), id)) ?? null };
    } catch (e) {
      return { error: errInfo(e) };
    }
  }

  async ping() {
    try {
      return { frame: await this.device.ping() };
    } catch (e) {
      return { error: errInfo(e) };
    }
  }

  stats() {
    return this.device.stats();
  }

  async stop() {
    await this.device.stop();
    return true;
  }
}
