// A minimal Chrome DevTools Protocol driver for headless Chromium over
// --remote-debugging-pipe (no port, no extra npm package): launch, open a
// page, evaluate expressions (awaiting promises), collect console output.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];

/** The Chromium to run: $CHROMIUM_PATH, or the first one installed. Throws when there is none. */
export function chromiumPath() {
  const p = process.env.CHROMIUM_PATH || CANDIDATES.find((c) => existsSync(c));
  if (!p || !existsSync(p)) {
    throw new Error(`no Chromium found (looked for $CHROMIUM_PATH and ${CANDIDATES.join(', ')}); install it: apt-get install -y chromium`);
  }
  return p;
}

// The flags this machine needs: without the background-networking ones,
// Chromium hammers the closed network.
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', '--disable-extensions', '--disable-default-apps', '--mute-audio',
  '--remote-debugging-pipe',
];

export async function launch() {
  const exe = chromiumPath();
  const profile = mkdtempSync(join(tmpdir(), 'tether-js-chromium-'));
  const proc = spawn(exe, [...FLAGS, `--user-data-dir=${profile}`, 'about:blank'], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (b) => {
    stderr += b.toString();
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  proc.stdout.resume();
  const exited = new Promise((r) => proc.once('exit', (code, sig) => r(code ?? sig)));
  const conn = new Connection(proc.stdio[3], proc.stdio[4], exited, () => stderr);
  const version = await conn.send('Browser.getVersion');
  return {
    version: version.product,
    conn,
    stderr: () => stderr,
    async newPage() {
      const { targetId } = await conn.send('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await conn.send('Target.attachToTarget', { targetId, flatten: true });
      const page = new Page(conn, sessionId);
      await page.init();
      return page;
    },
    async close() {
      try {
        await Promise.race([conn.send('Browser.close'), new Promise((r) => setTimeout(r, 3000))]);
      } catch {
        // closing
      }
      if (proc.exitCode === null && proc.signalCode === null) {
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

class Connection {
  #out;
  #seq = 0;
  #pending = new Map();
  #listeners = new Set();
  #buf = '';
  #dead = null;

  constructor(out, input, exited, stderr) {
    this.#out = out;
    input.on('data', (chunk) => {
      this.#buf += chunk.toString('utf8');
      let i;
      while ((i = this.#buf.indexOf('\0')) >= 0) {
        const msg = JSON.parse(this.#buf.slice(0, i));
        this.#buf = this.#buf.slice(i + 1);
        this.#dispatch(msg);
      }
    });
    exited.then((code) => {
      this.#dead = new Error(`Chromium exited (${code}):\n${stderr().slice(-4000)}`);
      for (const p of this.#pending.values()) p.reject(this.#dead);
      this.#pending.clear();
    });
  }

  #dispatch(msg) {
    if (msg.id !== undefined) {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}${msg.error.data ? ' ' + msg.error.data : ''}`));
      else p.resolve(msg.result);
      return;
    }
    for (const l of this.#listeners) l(msg);
  }

  send(method, params = {}, sessionId = undefined) {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = ++this.#seq;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, method });
      this.#out.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    });
  }

  onEvent(fn) {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }
}

class Page {
  constructor(conn, sessionId) {
    this.conn = conn;
    this.sessionId = sessionId;
    this.console = [];
    this.loaded = null;
    conn.onEvent((m) => {
      if (m.sessionId !== sessionId) return;
      if (m.method === 'Runtime.consoleAPICalled') {
        const text = m.params.args.map((a) => a.value ?? a.description ?? a.type).join(' ');
        this.console.push(`[${m.params.type}] ${text}`);
      } else if (m.method === 'Runtime.exceptionThrown') {
        this.console.push(`[exception] ${m.params.exceptionDetails.exception?.description ?? m.params.exceptionDetails.text}`);
      } else if (m.method === 'Page.loadEventFired') {
        this.loaded?.();
      }
    });
  }

  send(method, params) {
    return this.conn.send(method, params, this.sessionId);
  }

  async init() {
    await this.send('Runtime.enable');
    await this.send('Page.enable');
  }

  /** Navigates and resolves once the load event has fired. */
  async goto(url) {
    const loaded = new Promise((r) => (this.loaded = r));
    const res = await this.send('Page.navigate', { url });
    if (res.errorText) throw new Error(`navigate ${url}: ${res.errorText}`);
    await loaded;
  }

  /** Evaluates an expression in the page, awaits its promise, and returns its value (JSON). */
  async evaluate(expression) {
    const res = await this.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (res.exceptionDetails) {
      const d = res.exceptionDetails;
      throw new Error(`in the page: ${d.exception?.description ?? d.text}`);
    }
    return res.result.value;
  }
}
