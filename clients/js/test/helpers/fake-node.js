// A scripted stand-in for a tether node: a `ws` server on a free port whose
// behaviour each test writes. Every connection is recorded with the frames
// it received; tests wait on events (a connection, a frame, a close)
// rather than sleeping.
import { WebSocketServer } from 'ws';
import { createServer } from 'node:net';

/** Waits for predicate() to hold, re-checking whenever notify() is called. */
export class Signal {
  #waiters = new Set();
  notify() {
    for (const w of [...this.#waiters]) w();
  }
  /**
   * @template T
   * @param {() => T | undefined | false} predicate
   * @param {number} [timeoutMs]
   * @param {string} [what]
   * @returns {Promise<T>}
   */
  wait(predicate, timeoutMs = 10_000, what = 'condition') {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = predicate();
        } catch (err) {
          done();
          reject(err);
          return;
        }
        if (v) {
          done();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }
}

/**
 * Starts a fake node. onConnection(conn) runs for each WebSocket; by
 * default it welcomes the device.
 * @param {(conn: FakeConn) => void} [onConnection]
 */
export async function fakeNode(onConnection = (c) => c.welcome()) {
  const signal = new Signal();
  const conns = [];
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    handleProtocols: (protocols) => (protocols.has('tether.v1') ? 'tether.v1' : false),
  });
  await new Promise((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  const port = wss.address().port;
  let seq = 0;
  wss.on('connection', (ws, req) => {
    const c = new FakeConn(ws, req, ++seq, signal);
    conns.push(c);
    signal.notify();
    onConnection(c);
  });
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    port,
    conns,
    signal,
    /** Resolves with the n-th connection (1-based) once it exists. */
    conn(n) {
      return signal.wait(() => conns[n - 1], 10_000, `connection ${n} to the fake node on port ${port}`);
    },
    async close() {
      for (const c of conns) c.ws.terminate();
      await new Promise((resolve) => wss.close(() => resolve()));
    },
  };
}

export class FakeConn {
  constructor(ws, req, n, signal) {
    this.ws = ws;
    this.req = req;
    this.n = n;
    this.signal = signal;
    this.url = new URL(req.url, 'http://fake');
    this.frames = [];
    this.wsPings = 0;
    this.closed = null; // {code, reason} once closed
    this.connId = `fake-1.c${n}`;
    ws.on('message', (data, isBinary) => {
      let f;
      try {
        f = JSON.parse(data.toString());
      } catch {
        f = { type: '<not json>', raw: data.toString(), isBinary };
      }
      this.frames.push(f);
      if (this.autoPong && f.type === 'ping') this.send({ type: 'pong', ...(f.id ? { id: f.id } : {}) });
      signal.notify();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      signal.notify();
    });
    ws.on('error', () => {});
    this.autoPong = true;
  }

  /** Sends a frame (an object is JSON-encoded). */
  send(f) {
    this.ws.send(typeof f === 'string' ? f : JSON.stringify(f));
  }

  /** Sends a welcome; extra fields override the defaults. */
  welcome(extra = {}) {
    this.send({
      type: 'welcome', conn: this.connId, service: 'vacuum', device: 'dev-1', node: 'fake-1',
      ping_ms: 25_000, max_frame: 65_536, ...extra,
    });
  }

  close(code, reason = '') {
    this.ws.close(code, reason);
  }

  /** Resolves with the first received frame (from the start) that matches. */
  frame(match = {}, timeoutMs = 10_000) {
    return this.signal.wait(
      () => this.frames.find((f) => Object.entries(match).every(([k, v]) => f[k] === v)),
      timeoutMs,
      `a frame ${JSON.stringify(match)} on fake connection ${this.n}`,
    );
  }

  /** Resolves once the connection is closed, with {code, reason}. */
  whenClosed(timeoutMs = 10_000) {
    return this.signal.wait(() => this.closed, timeoutMs, `fake connection ${this.n} to close`);
  }

  count(type) {
    return this.frames.filter((f) => f.type === type).length;
  }
}

/** A ws:// URL on which nothing listens (a port that was free a moment ago). */
export async function deadUrl() {
  const srv = createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = srv.address().port;
  await new Promise((resolve) => srv.close(resolve));
  return `ws://127.0.0.1:${port}/ws`;
}

/** Collects a device's callbacks as events tests can wait on. */
export function watch(extra = {}) {
  const signal = new Signal();
  const ev = { welcomes: [], closes: [], frames: [], errors: [], stops: [], pushes: [], acks: [], backoffs: [] };
  const push = (k) => (v) => {
    ev[k].push(v);
    signal.notify();
  };
  return {
    ev,
    signal,
    opts: {
      onWelcome: push('welcomes'),
      onClose: (code, reason) => push('closes')({ code, reason }),
      onFrame: push('frames'),
      onError: push('errors'),
      onStop: push('stops'),
      ...extra,
    },
    /** Adds the ack and backoff listeners to a device. */
    attach(d) {
      d.on('ack', push('acks'));
      d.on('backoff', push('backoffs'));
      return d;
    },
    wait(pred, what, timeoutMs = 10_000) {
      return signal.wait(pred, timeoutMs, what);
    },
  };
}
