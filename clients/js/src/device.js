// The device side: a client of the device WebSocket protocol
// (docs/protocol.md) that behaves like the Go client in simulator/device.go.
// It runs in browsers as a plain ES module (no Node imports here); the Node
// entry points install the `ws` package as the WebSocket when the runtime
// has none (see setWebSocketLoader).
import { TetherError, ErrorCode } from './errors.js';
import { nameProblem, quote } from './names.js';
import { Backoff } from './backoff.js';
import { utf8Length } from './encoding.js';
import { SUBPROTOCOL, authFrame, ackFrame, msgFrame, pingFrame, decodeFrame, Push } from './frames.js';

/** @typedef {(need: {headers: boolean}) => any | Promise<any>} WebSocketLoader */

/** @type {WebSocketLoader} */
let webSocketLoader = () => globalThis.WebSocket;

/**
 * Sets how a Device finds its WebSocket constructor when none is given in
 * its options. The Node entry points use it to fall back on the `ws`
 * package; browsers use globalThis.WebSocket.
 * @param {WebSocketLoader} loader
 */
export function setWebSocketLoader(loader) {
  webSocketLoader = loader;
}

const OPEN = 1;
const now = () => performance.now();

/** Device states, as stats().state reports them. */
export const DeviceState = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  BACKOFF: 'backoff',
  STOPPED: 'stopped',
});

const DEFAULTS = Object.freeze({
  auth: 'query',
  minBackoff: 100,
  maxBackoff: 10_000,
  connectTimeout: 5_000,
  directoryTimeout: 5_000,
});

function badOption(msg) {
  return new TetherError(ErrorCode.BAD_OPTION, 'tether: Device: ' + msg);
}

function checkMs(o, key, { min = 0, allowZero = true } = {}) {
  const v = o[key];
  if (v === undefined) return DEFAULTS[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (!allowZero && v === 0)) {
    throw badOption(`${key} must be a finite number of milliseconds ${allowZero ? '>= ' + min : '> 0'}, got ${quote(v)}`);
  }
  return v;
}

function checkFn(o, key) {
  if (o[key] !== undefined && typeof o[key] !== 'function') {
    throw badOption(`${key} must be a function, got ${typeof o[key]}`);
  }
  return o[key];
}

function checkWsUrl(u, what) {
  let p;
  try {
    p = new URL(u);
  } catch {
    throw badOption(`${what} ${quote(u)} is not a URL`);
  }
  if (p.protocol !== 'ws:' && p.protocol !== 'wss:') throw badOption(`${what} ${quote(u)} is not a ws:// or wss:// URL`);
  return u;
}

/**
 * Asks the directory for the nodes of a service (and/or client):
 * GET {directoryUrl}/v1/nodes?service=S&client=C (docs/directory.md).
 * @param {string} directoryUrl
 * @param {{service?: string, clientId?: string, fetch?: typeof fetch, timeoutMs?: number, signal?: AbortSignal}} [o]
 * @returns {Promise<{service: string, tier: string, handshakeUrl: string[]}>}
 */
export async function fetchNodes(directoryUrl, o = {}) {
  const q = new URLSearchParams();
  if (o.service) q.set('service', o.service);
  if (o.clientId) q.set('client', o.clientId);
  const url = directoryUrl.replace(/\/+$/, '') + '/v1/nodes?' + q.toString();
  const f = o.fetch ?? globalThis.fetch;
  if (typeof f !== 'function') throw new TetherError(ErrorCode.DIRECTORY, 'tether: no fetch in this runtime; pass the fetch option');
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), o.timeoutMs ?? DEFAULTS.directoryTimeout);
  const onAbort = () => ac.abort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let resp, body;
  try {
    resp = await f(url, { signal: ac.signal, headers: { Accept: 'application/json' } });
    body = await resp.text();
  } catch (err) {
    const why = ac.signal.aborted && !o.signal?.aborted ? `no answer within ${o.timeoutMs ?? DEFAULTS.directoryTimeout}ms` : err?.message ?? String(err);
    throw new TetherError(ErrorCode.DIRECTORY, `tether: directory ${url}: ${why}`, { cause: err });
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener('abort', onAbort);
  }
  let j;
  try {
    j = JSON.parse(body);
  } catch {
    j = undefined;
  }
  if (resp.status !== 200) {
    const code = j && typeof j.error === 'string' ? j.error : undefined;
    const msg = j && typeof j.message === 'string' ? j.message : body.slice(0, 200);
    throw new TetherError(ErrorCode.DIRECTORY, `tether: directory ${url}: ${resp.status} ${code ?? ''} ${msg}`.trim(), {
      status: resp.status,
      directoryCode: code,
    });
  }
  if (!j || !Array.isArray(j.handshakeUrl) || !j.handshakeUrl.every((u) => typeof u === 'string')) {
    throw new TetherError(ErrorCode.DIRECTORY, `tether: directory ${url}: answer without a handshakeUrl list: ${body.slice(0, 200)}`);
  }
  return { service: j.service, tier: j.tier, handshakeUrl: j.handshakeUrl };
}

/**
 * A device: it gets the node list, connects to the first node that takes
 * it, authenticates, acks pushes, sends upstream messages, watches the
 * node's liveness, and reconnects (with full-jitter exponential backoff
 * between failed rounds) until stop() or a terminal close code.
 */
export class Device {
  #o;
  #backoff;
  #listeners = new Map();
  #state = DeviceState.IDLE;
  #started = false;
  #stopping = false;
  #abort = new AbortController();
  #token = '';
  #refusals = 0; // 4001/4002 since the last welcome
  #session = null; // the session being opened or up
  #current = null; // the session that has its welcome
  #welcome = null;
  #seq = 0;
  #connectWaiters = new Set();
  #resolveDone;
  #stopResult = null;
  #stats = { connects: 0, reconnects: 0, attempts: 0, pushes: 0, acks: 0, sent: 0, pings: 0, pongs: 0 };

  /** @param {import('../types/device.js').DeviceOptions} options */
  constructor(options) {
    if (options === null || typeof options !== 'object') throw badOption('options are required');
    const o = { ...options };
    if (o.service !== undefined) {
      const p = nameProblem(o.service);
      if (p) throw new TetherError(ErrorCode.BAD_NAME, `tether: Device: invalid service ${quote(o.service)}: it ${p}`);
    }
    if (o.clientId !== undefined) {
      const p = nameProblem(o.clientId);
      if (p) throw new TetherError(ErrorCode.BAD_NAME, `tether: Device: invalid clientId ${quote(o.clientId)}: it ${p}`);
    }
    if (o.token !== undefined && (typeof o.token !== 'string' || o.token === '')) throw badOption('token must be a non-empty string');
    checkFn(o, 'tokenFn');
    if (!o.token && !o.tokenFn) throw badOption('token or tokenFn is required');
    if (o.directoryUrl !== undefined) {
      let p;
      try {
        p = new URL(o.directoryUrl);
      } catch {
        throw badOption(`directoryUrl ${quote(o.directoryUrl)} is not a URL`);
      }
      if (p.protocol !== 'http:' && p.protocol !== 'https:') throw badOption(`directoryUrl ${quote(o.directoryUrl)} is not an http:// or https:// URL`);
      if (!o.service && !o.clientId) throw badOption('with directoryUrl, service or clientId is required (the directory looks nodes up by them)');
    }
    if (o.nodes !== undefined) {
      if (!Array.isArray(o.nodes) || o.nodes.length === 0) throw badOption('nodes must be a non-empty array of ws:// or wss:// URLs');
      o.nodes.forEach((u, i) => checkWsUrl(u, `nodes[${i}]`));
      o.nodes = [...o.nodes];
    }
    if (o.directoryUrl === undefined && o.nodes === undefined) throw badOption('directoryUrl or nodes is required');
    o.auth = o.auth ?? DEFAULTS.auth;
    if (o.auth !== 'query' && o.auth !== 'frame' && o.auth !== 'header') {
      throw badOption(`auth must be "query", "frame" or "header", got ${quote(o.auth)}`);
    }
    o.minBackoff = checkMs(o, 'minBackoff');
    o.maxBackoff = checkMs(o, 'maxBackoff', { allowZero: false });
    if (o.minBackoff > o.maxBackoff) throw badOption(`minBackoff ${o.minBackoff} is above maxBackoff ${o.maxBackoff}`);
    o.connectTimeout = checkMs(o, 'connectTimeout', { allowZero: false });
    o.directoryTimeout = checkMs(o, 'directoryTimeout', { allowZero: false });
    for (const k of ['onPush', 'onWelcome', 'onClose', 'onFrame', 'onError', 'onStop', 'webSocket', 'fetch', 'random']) checkFn(o, k);
    this.#o = o;
    this.#token = o.token ?? '';
    this.#backoff = new Backoff({ minMs: o.minBackoff, maxMs: o.maxBackoff, random: o.random });
    /**
     * Settles when the device has stopped for good: with null after stop(),
     * with a TetherError (code refused or replaced) after a terminal close.
     * It never rejects.
     * @type {Promise<TetherError | null>}
     */
    this.done = new Promise((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  // ---- public API ----

  /** Starts connecting. Returns the device. Throws if already started. */
  start() {
    if (this.#started) throw new TetherError(ErrorCode.BAD_OPTION, 'tether: Device: start() was already called');
    this.#started = true;
    this.#run().catch((err) => {
      // Not expected: #run handles its errors. Stop rather than hang.
      this.#emitError(err instanceof TetherError ? err : new TetherError(ErrorCode.PROTOCOL, `tether: internal error: ${err?.message}`, { cause: err }));
      this.#finish(null);
    });
    return this;
  }

  /**
   * Stops the device: closes its connection (code 1000, reason "stopped")
   * and ends reconnecting. Resolves once it has stopped. Idempotent.
   * @returns {Promise<void>}
   */
  async stop() {
    if (!this.#started) {
      this.#started = true;
      this.#finish(null);
      return;
    }
    if (!this.#stopping) {
      this.#stopping = true;
      this.#abort.abort();
      const s = this.#session;
      if (s) this.#end(s, 1000, 'stopped', { local: true, graceful: true });
    }
    await this.done;
  }

  /**
   * Sends an upstream msg frame. data: bytes (Uint8Array, Buffer,
   * ArrayBuffer) are sent as is (embedded when they are UTF-8 JSON, else
   * base64 with enc), strings as UTF-8 the same way, anything else
   * JSON-encoded. With an id, resolves with the node's ack frame once the
   * node has handed the message to NATS, and rejects with a TetherError
   * (node_error) on its error frame; without one, resolves once written.
   * @param {unknown} data
   * @param {string} [id]
   */
  async send(data, id = undefined) {
    if (id !== undefined && (typeof id !== 'string' || id === '')) throw badOption(`send: id must be a non-empty string, got ${quote(id)}`);
    const s = this.#current;
    if (!s) throw new TetherError(ErrorCode.NOT_CONNECTED, 'tether: Device: send: not connected');
    const text = msgFrame(data, id);
    if (id === undefined) {
      this.#write(s, text);
      this.#stats.sent++;
      return undefined;
    }
    const key = 'msg:' + id;
    if (s.waiters.has(key)) throw badOption(`send: a message with id ${quote(id)} already awaits its ack`);
    const p = this.#waiter(s, key, 0);
    try {
      this.#write(s, text);
    } catch (err) {
      s.waiters.get(key)?.settle(err);
      throw err;
    }
    this.#stats.sent++;
    return p;
  }

  /**
   * Sends an application ping and resolves with the node's pong frame.
   * @param {{timeoutMs?: number}} [o] default 10000
   */
  async ping(o = {}) {
    const s = this.#current;
    if (!s) throw new TetherError(ErrorCode.NOT_CONNECTED, 'tether: Device: ping: not connected');
    const id = 'p' + ++this.#seq;
    const p = this.#waiter(s, 'ping:' + id, o.timeoutMs ?? 10_000);
    try {
      this.#write(s, pingFrame(id));
    } catch (err) {
      s.waiters.get('ping:' + id)?.settle(err);
      throw err;
    }
    this.#stats.pings++;
    return p;
  }

  /**
   * Resolves with the welcome frame once the device is connected (at once
   * if it is). Rejects when the device stops, on timeoutMs, or on signal.
   * @param {{timeoutMs?: number, signal?: AbortSignal}} [o]
   */
  waitConnected(o = {}) {
    if (this.#current) return Promise.resolve(this.#welcome);
    if (this.#state === DeviceState.STOPPED) {
      return Promise.reject(this.#stopResult ?? new TetherError(ErrorCode.STOPPED, 'tether: Device: stopped'));
    }
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (v) => {
          cleanup();
          resolve(v);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      let timer;
      const onAbort = () => w.reject(new TetherError(ErrorCode.ABORTED, 'tether: Device: waitConnected aborted'));
      const cleanup = () => {
        this.#connectWaiters.delete(w);
        clearTimeout(timer);
        o.signal?.removeEventListener('abort', onAbort);
      };
      if (o.signal?.aborted) return onAbort();
      o.signal?.addEventListener('abort', onAbort, { once: true });
      if (o.timeoutMs !== undefined) {
        timer = setTimeout(() => w.reject(new TetherError(ErrorCode.TIMEOUT, `tether: Device: not connected within ${o.timeoutMs}ms`)), o.timeoutMs);
      }
      this.#connectWaiters.add(w);
    });
  }

  /** The welcome frame of the current connection, or null when not connected. */
  get welcome() {
    return this.#current ? this.#welcome : null;
  }

  /** Whether a connection is up (welcomed). */
  get connected() {
    return this.#current !== null;
  }

  /** The device's state: idle, connecting, connected, backoff or stopped. */
  get state() {
    return this.#state;
  }

  /** Counters and the current connection. */
  stats() {
    const w = this.welcome;
    return { ...this.#stats, state: this.#state, conn: w?.conn ?? null, node: w?.node ?? null };
  }

  /**
   * Adds a listener: "welcome" (frame), "close" (code, reason), "frame"
   * (frame), "ack" ({id, result}), "backoff" (delayMs), "error"
   * (TetherError), "stop" (TetherError | null). Returns a function that
   * removes it.
   */
  on(type, fn) {
    if (typeof fn !== 'function') throw badOption(`on(${quote(type)}): listener must be a function`);
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** Removes a listener added with on(). */
  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  // ---- internals ----

  #emit(type, callback, ...args) {
    if (callback) this.#call(callback, args, type);
    const set = this.#listeners.get(type);
    if (set) for (const fn of [...set]) this.#call(fn, args, type);
  }

  #call(fn, args, type) {
    try {
      const r = fn(...args);
      if (r && typeof r.then === 'function') r.then(undefined, (err) => this.#callbackFailed(type, err));
    } catch (err) {
      this.#callbackFailed(type, err);
    }
  }

  #callbackFailed(type, err) {
    if (type === 'error') return; // never loop
    this.#emitError(new TetherError(ErrorCode.HANDLER, `tether: Device: ${type} callback threw: ${err?.message ?? err}`, { cause: err }));
  }

  #emitError(err) {
    this.#emit('error', this.#o.onError, err);
  }

  #setState(st) {
    this.#state = st;
  }

  #finish(result) {
    if (this.#state === DeviceState.STOPPED) return;
    this.#setState(DeviceState.STOPPED);
    this.#stopResult = result;
    this.#stopping = true;
    this.#abort.abort();
    const err = result ?? new TetherError(ErrorCode.STOPPED, 'tether: Device: stopped');
    for (const w of [...this.#connectWaiters]) w.reject(err);
    this.#resolveDone(result);
    this.#emit('stop', this.#o.onStop, result);
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      if (this.#abort.signal.aborted) return resolve(false);
      const t = setTimeout(() => {
        this.#abort.signal.removeEventListener('abort', onAbort);
        resolve(true);
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        resolve(false);
      };
      this.#abort.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async #backoffSleep(ms) {
    this.#setState(DeviceState.BACKOFF);
    this.#emit('backoff', undefined, ms);
    return this.#sleep(ms);
  }

  async #run() {
    let avoid = null; // a node that asked us to leave, or that died under us
    while (!this.#stopping) {
      this.#setState(DeviceState.CONNECTING);
      let nodes = await this.#nodeList();
      if (this.#stopping) break;
      if (avoid !== null && nodes.length > 1) {
        nodes = [...nodes.filter((u) => u !== avoid), ...nodes.filter((u) => u === avoid)];
      }
      avoid = null;
      let last = null;
      for (let i = 0; i < nodes.length && !this.#stopping; i++) {
        const res = await this.#connect(nodes[i]);
        if (res.fatal) {
          this.#finish(res.fatal);
          return;
        }
        if (res.refresh) {
          i--; // the same node again, with a fresh token
          continue;
        }
        if (res.connected) {
          last = res;
          if (res.leave) avoid = nodes[i];
          break; // a fresh list after a session that worked
        }
      }
      if (this.#stopping) break;
      if (last) {
        this.#stats.reconnects++;
        if (last.slow) {
          // 4101, 4102, 4104, 1002, 1007, 1009: reconnect, with backoff.
          if (!(await this.#backoffSleep(this.#backoff.next()))) break;
        } else {
          this.#backoff.reset();
          // Dropped: do not stampede back; a short jitter suffices. A node
          // that asked us to leave already spread us with after_ms.
          if (avoid === null && !(await this.#backoffSleep(this.#backoff.jitter(this.#o.minBackoff)))) break;
        }
        continue;
      }
      if (!(await this.#backoffSleep(this.#backoff.next()))) break;
    }
    this.#finish(null);
  }

  async #nodeList() {
    const o = this.#o;
    if (o.directoryUrl === undefined) return o.nodes;
    try {
      const r = await fetchNodes(o.directoryUrl, {
        service: o.service,
        clientId: o.clientId,
        fetch: o.fetch,
        timeoutMs: o.directoryTimeout,
        signal: this.#abort.signal,
      });
      if (r.handshakeUrl.length === 0) throw new TetherError(ErrorCode.DIRECTORY, 'tether: directory: empty node list');
      return r.handshakeUrl;
    } catch (err) {
      if (this.#stopping) return [];
      // Fall back on a configured list when the directory fails.
      this.#emitError(err instanceof TetherError ? err : new TetherError(ErrorCode.DIRECTORY, `tether: directory: ${err?.message}`, { cause: err }));
      return o.nodes ?? [];
    }
  }

  async #currentToken() {
    if (this.#token !== '' || !this.#o.tokenFn) return this.#token;
    const t = await this.#o.tokenFn();
    if (typeof t !== 'string' || t === '') throw new Error(`tokenFn returned ${quote(t)}, not a non-empty string`);
    this.#token = t;
    return t;
  }

  async #webSocketCtor() {
    if (this.#o.webSocket) return this.#o.webSocket;
    const ctor = await webSocketLoader({ headers: this.#o.auth === 'header' });
    if (typeof ctor !== 'function') {
      throw new TetherError(ErrorCode.CONNECT, 'tether: Device: no WebSocket in this runtime; pass the webSocket option');
    }
    return ctor;
  }

  /** One connection to url, until it ends. Resolves with its outcome. */
  async #connect(nodeUrl) {
    let token;
    try {
      token = await this.#currentToken();
    } catch (err) {
      this.#emitError(new TetherError(ErrorCode.TOKEN, `tether: Device: tokenFn failed: ${err?.message ?? err}`, { cause: err }));
      return {};
    }
    if (this.#stopping) return {};
    const o = this.#o;
    let url;
    try {
      const u = new URL(nodeUrl);
      if (o.auth === 'query') u.searchParams.set('token', token);
      if (o.service && o.auth !== 'frame') u.searchParams.set('service', o.service);
      url = u.toString();
    } catch (err) {
      this.#emitError(new TetherError(ErrorCode.CONNECT, `tether: Device: bad node URL ${quote(nodeUrl)}`, { cause: err, url: nodeUrl }));
      return {};
    }
    let ws;
    try {
      const Ctor = await this.#webSocketCtor();
      if (this.#stopping) return {};
      this.#stats.attempts++;
      ws =
        o.auth === 'header'
          ? new Ctor(url, [SUBPROTOCOL], { headers: { Authorization: 'Bearer ' + token } })
          : new Ctor(url, [SUBPROTOCOL]);
      ws.binaryType = 'arraybuffer';
    } catch (err) {
      this.#emitError(err instanceof TetherError ? err : new TetherError(ErrorCode.CONNECT, `tether: Device: ${nodeUrl}: ${err?.message ?? err}`, { cause: err, url: nodeUrl }));
      return {};
    }
    return new Promise((resolve) => {
      const s = {
        ws,
        url: nodeUrl,
        token,
        resolve,
        opened: false,
        welcomed: false,
        ended: false,
        leave: false,
        lastRx: now(),
        pingMs: 0,
        maxFrame: 0,
        pingOut: false,
        pingAt: 0,
        liveTimer: undefined,
        connectTimer: undefined,
        reconnectTimer: undefined,
        waiters: new Map(),
        pushChain: Promise.resolve(),
        error: undefined,
      };
      this.#session = s;
      s.connectTimer = setTimeout(
        () => this.#end(s, 1006, 'connect_timeout', { local: true, why: `no welcome within ${o.connectTimeout}ms` }),
        o.connectTimeout,
      );
      ws.onopen = () => {
        if (s.ended) return;
        s.opened = true;
        if (o.auth === 'frame') {
          try {
            ws.send(authFrame(token, o.service));
          } catch (err) {
            this.#end(s, 1006, 'auth_failed', { local: true, why: err?.message });
          }
        }
      };
      ws.onmessage = (ev) => {
        if (s.ended) return;
        s.lastRx = now();
        let f;
        try {
          f = decodeFrame(ev.data);
        } catch (err) {
          this.#emitError(new TetherError(ErrorCode.PROTOCOL, `tether: Device: bad frame from ${nodeUrl}: ${err.message}`, { cause: err }));
          return;
        }
        this.#onFrame(s, f);
      };
      ws.onerror = (ev) => {
        s.error = ev?.message ?? ev?.error?.message;
      };
      ws.onclose = (ev) => this.#end(s, ev.code, ev.reason ?? '', {});
    });
  }

  #onFrame(s, f) {
    const o = this.#o;
    switch (f.type) {
      case 'welcome': {
        if (s.welcomed) return;
        s.welcomed = true;
        clearTimeout(s.connectTimer);
        this.#refusals = 0;
        s.pingMs = typeof f.ping_ms === 'number' && f.ping_ms > 0 ? f.ping_ms : 0;
        s.maxFrame = typeof f.max_frame === 'number' && f.max_frame > 0 ? f.max_frame : 0;
        this.#welcome = f;
        this.#current = s;
        this.#stats.connects++;
        this.#setState(DeviceState.CONNECTED);
        if (s.pingMs > 0) this.#liveArm(s);
        for (const w of [...this.#connectWaiters]) w.resolve(f);
        this.#emit('welcome', o.onWelcome, f);
        return;
      }
      case 'push':
        if (!s.welcomed) return; // never happens: no push before the welcome
        s.pushChain = s.pushChain.then(() => this.#handlePush(s, f));
        return;
      case 'reconnect': {
        s.leave = true;
        const after = typeof f.after_ms === 'number' && f.after_ms > 0 ? f.after_ms : 0;
        if (s.reconnectTimer === undefined) {
          s.reconnectTimer = setTimeout(() => this.#end(s, 1000, 'reconnect', { local: true, graceful: true }), after);
        }
        break;
      }
      case 'pong':
        this.#stats.pongs++;
        if (typeof f.id === 'string') s.waiters.get('ping:' + f.id)?.settle(null, f);
        break;
      case 'ack':
        if (typeof f.id === 'string') s.waiters.get('msg:' + f.id)?.settle(null, f);
        break;
      case 'error':
        if (typeof f.id === 'string' && f.code !== 'unknown_ack') {
          const w = s.waiters.get('msg:' + f.id) ?? s.waiters.get('ping:' + f.id);
          w?.settle(new TetherError(ErrorCode.NODE_ERROR, `tether: node: ${f.code}: ${f.message ?? ''}`.trim(), { nodeCode: f.code, frame: f }));
        }
        break;
    }
    this.#emit('frame', o.onFrame, f);
  }

  async #handlePush(s, f) {
    if (s.ended) return;
    this.#stats.pushes++;
    let push;
    try {
      push = new Push(f, Date.now());
    } catch (err) {
      this.#emitError(new TetherError(ErrorCode.PROTOCOL, `tether: Device: push ${f.id}: bad payload: ${err.message}`, { cause: err, frame: f }));
      push = new Push({ ...f, enc: undefined, data: null }, Date.now());
    }
    let result = 'ok';
    let data;
    if (this.#o.onPush) {
      try {
        const r = await this.#o.onPush(push);
        if (typeof r === 'string') result = r || 'ok';
        else if (r !== undefined && r !== null) {
          if (typeof r !== 'object') throw new TypeError(`onPush returned a ${typeof r}; return a result string or {result, data}`);
          if (r.result !== undefined && (typeof r.result !== 'string' || r.result === '')) {
            throw new TypeError(`onPush returned result ${quote(r.result)}; it must be a non-empty string`);
          }
          result = r.result ?? 'ok';
          data = r.data;
        }
      } catch (err) {
        this.#emitError(new TetherError(ErrorCode.HANDLER, `tether: Device: onPush failed for push ${push.id}: ${err?.message ?? err}`, { cause: err }));
        result = 'error';
        data = undefined;
      }
    }
    if (push.noAck || s.ended || this.#current !== s) return;
    let text;
    try {
      text = ackFrame(push.id, result, data);
      if (s.maxFrame > 0 && utf8Length(text) > s.maxFrame) {
        this.#emitError(new TetherError(ErrorCode.TOO_BIG, `tether: Device: the ack of push ${push.id} is over max_frame ${s.maxFrame}; acked with result "too_big" and no data`));
        result = 'too_big';
        text = ackFrame(push.id, result);
      }
    } catch (err) {
      this.#emitError(new TetherError(ErrorCode.HANDLER, `tether: Device: ack data of push ${push.id}: ${err?.message}; acked with result "error" and no data`, { cause: err }));
      result = 'error';
      text = ackFrame(push.id, result);
    }
    try {
      this.#write(s, text);
    } catch (err) {
      this.#emitError(err);
      return;
    }
    this.#stats.acks++;
    this.#emit('ack', undefined, { id: push.id, result });
  }

  #write(s, text) {
    if (s.ended || s.ws.readyState !== OPEN) throw new TetherError(ErrorCode.NOT_CONNECTED, 'tether: Device: not connected');
    if (s.maxFrame > 0) {
      const n = utf8Length(text);
      if (n > s.maxFrame) throw new TetherError(ErrorCode.TOO_BIG, `tether: Device: a frame of ${n} bytes is over the node's max_frame ${s.maxFrame}`, { size: n, maxFrame: s.maxFrame });
    }
    s.ws.send(text);
  }

  #waiter(s, key, timeoutMs) {
    return new Promise((resolve, reject) => {
      let timer;
      const w = {
        settle: (err, v) => {
          if (s.waiters.get(key) !== w) return;
          s.waiters.delete(key);
          clearTimeout(timer);
          if (err) reject(err);
          else resolve(v);
        },
      };
      if (timeoutMs > 0) {
        timer = setTimeout(() => w.settle(new TetherError(ErrorCode.TIMEOUT, `tether: Device: no answer to ${key} within ${timeoutMs}ms`)), timeoutMs);
      }
      s.waiters.set(key, w);
    });
  }

  // Liveness (README "Liveness"): the node writes at least one frame every
  // ping_ms. With no data frame for ping_ms, send an application ping; with
  // nothing at all for a further ping_ms, the connection is dead.
  #liveArm(s) {
    clearTimeout(s.liveTimer);
    const due = (s.pingOut ? s.pingAt : s.lastRx) + s.pingMs;
    s.liveTimer = setTimeout(() => this.#liveCheck(s), Math.max(0, due - now()));
  }

  #liveCheck(s) {
    if (s.ended) return;
    const t = now();
    if (s.pingOut && s.lastRx >= s.pingAt) s.pingOut = false;
    if (s.pingOut) {
      if (t - s.pingAt >= s.pingMs) {
        this.#end(s, 1006, 'ping_timeout', { local: true, dead: true, why: `nothing from the node for ${Math.round(t - s.lastRx)}ms (ping_ms ${s.pingMs})` });
        return;
      }
    } else if (t - s.lastRx >= s.pingMs) {
      try {
        this.#write(s, pingFrame('lv' + ++this.#seq));
        this.#stats.pings++;
      } catch {
        // The close event follows.
      }
      s.pingOut = true;
      s.pingAt = t;
    }
    this.#liveArm(s);
  }

  /** Ends session s once: cleans up, reports, and resolves its outcome. */
  #end(s, code, reason, { local = false, graceful = false, dead = false, why = undefined } = {}) {
    if (s.ended) return;
    s.ended = true;
    clearTimeout(s.connectTimer);
    clearTimeout(s.liveTimer);
    clearTimeout(s.reconnectTimer);
    const ws = s.ws;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {}; // ws (Node) throws on an error event nobody listens to
    if (local) {
      try {
        if (!graceful && typeof ws.terminate === 'function') ws.terminate();
        else ws.close(1000, reason);
      } catch {
        // already closing
      }
    }
    const wasCurrent = this.#current === s;
    if (wasCurrent) this.#current = null;
    if (this.#session === s) this.#session = null;
    if (this.#state === DeviceState.CONNECTED && wasCurrent) this.#setState(DeviceState.CONNECTING);
    const lost = this.#stopping
      ? new TetherError(ErrorCode.STOPPED, 'tether: Device: stopped')
      : new TetherError(ErrorCode.CONNECTION_LOST, `tether: Device: connection closed (${code} ${reason})`, { closeCode: code, reason });
    for (const w of [...s.waiters.values()]) w.settle(lost);

    const res = this.#classify(s, code, reason, local, dead);
    if (s.opened || s.welcomed) {
      this.#emit('close', this.#o.onClose, code, why ? `${reason}: ${why}` : reason);
    } else if (!this.#stopping) {
      const detail = why ?? s.error ?? (reason || `closed with ${code}`);
      this.#emitError(new TetherError(ErrorCode.CONNECT, `tether: Device: ${s.url}: ${detail}`, { url: s.url, closeCode: code }));
    }
    s.resolve(res);
  }

  #classify(s, code, reason, local, dead) {
    const res = { connected: s.welcomed, leave: s.leave || dead, slow: false, refresh: false, fatal: null };
    if (local) return res;
    const info = { closeCode: code, reason, url: s.url };
    if (code === 4005) {
      res.fatal = new TetherError(ErrorCode.REPLACED, `tether: Device: replaced by a newer connection of this device (4005 ${reason})`, info);
    } else if ((code === 4001 || code === 4002) && this.#o.tokenFn && this.#refusals === 0) {
      // A new token, once; refused again, the device gives up.
      this.#refusals++;
      if (this.#token === s.token) this.#token = '';
      res.refresh = true;
    } else if (code >= 4000 && code <= 4099) {
      res.fatal = new TetherError(ErrorCode.REFUSED, `tether: Device: refused by the node: ${code} ${reason}`.trim(), info);
    } else if (code >= 4100 && code <= 4199) {
      res.leave = true;
      res.slow = code === 4101 || code === 4102 || code === 4104;
    } else if (code === 1002 || code === 1007 || code === 1009) {
      res.slow = true;
    }
    return res;
  }
}
