// Loaded in the headless Chromium page: the browser entry of the package,
// as a plain ES module (no bundler), and the recorder of the conformance
// checks. The Node side drives it through window.harness.
import * as tether from '/src/browser.js';
import { Recorder } from '/test/conformance/recorder.js';

const recorders = new Map();
let seq = 0;

export const harness = {
  /** Creates a recorded Device; returns its handle ID. */
  create(opts) {
    const id = ++seq;
    recorders.set(id, new Recorder(tether.Device, opts));
    return id;
  },
  /** Calls a Recorder method and returns its (JSON) result. */
  async call(id, method, args) {
    const r = recorders.get(id);
    if (!r) throw new Error(`no recorder ${id}`);
    return r[method](...args);
  },
  /** What the page runs on: its own WebSocket, no Node. */
  runtime() {
    return {
      userAgent: navigator.userAgent,
      nativeWebSocket: typeof WebSocket === 'function' && String(WebSocket).includes('[native code]'),
      hasProcess: typeof globalThis.process !== 'undefined',
      exports: Object.keys(tether).sort(),
    };
  },
};
