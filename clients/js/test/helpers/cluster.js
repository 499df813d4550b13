// A real tether cluster for the integration and conformance tests: the
// `tether dev` command (embedded NATS, nodes, directory, demo apps, no
// simulated devices) on free ports, from a binary built once.
//
// test/run.js starts one shared cluster and passes its description in
// $TETHER_JS_CLUSTER; a test file run on its own starts a private one.
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHmac } from 'node:crypto';

const execFileP = promisify(execFile);
export const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const repoDir = resolve(pkgDir, '../..');

/** The dev configuration's HMAC secret of vacuum, to craft expired tokens (tether token cannot). */
const DEV_VACUUM = { kid: 'vacuum-dev', secret: 'dev-only-vacuum-secret-0123456789abcdef' };

/** Builds the tether binary into dir (once per run); returns its path. */
export async function buildTether(dir) {
  const out = join(dir, 'tether');
  await execFileP('go', ['build', '-o', out, '.'], { cwd: repoDir, maxBuffer: 64 << 20 });
  return out;
}

/** The tether binary: $TETHER_BIN, or one built into a temporary directory. */
export async function tetherBin() {
  if (process.env.TETHER_BIN) return process.env.TETHER_BIN;
  const dir = mkdtempSync(join(tmpdir(), 'tether-js-bin-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  process.env.TETHER_BIN = await buildTether(dir);
  return process.env.TETHER_BIN;
}

/**
 * Starts `tether dev` with every port free, no simulated devices, and the
 * demo apps at their lowest rate. Resolves once its state file is written.
 * @param {{bin: string, nodes?: number, pingInterval?: string, durationS?: number}} o (nodes: default 5, the dev seed's)
 */
export async function startCluster(o) {
  const dir = mkdtempSync(join(tmpdir(), 'tether-js-dev-'));
  const state = join(dir, 'dev.json');
  const args = [
    'dev', '--quiet', '--devices', '-1', '--rate', '1', '--upstream-every', '0',
    '--nats-port', '0', '--nats-monitor-port', '0', '--directory-port', '0', '--node-port', '0',
    '--duration', `${o.durationS ?? 1800}s`, '--nodes', String(o.nodes ?? 5),
    // The client is under test, not the balancer: keep the seed's map.
    '--balancer=false',
  ];
  if (o.pingInterval) {
    // The built-in dev configuration with another ping interval.
    const yaml = readFileSync(join(repoDir, 'internal/config/dev.yaml'), 'utf8');
    const changed = yaml.replace(/^( {2}ping_interval:) .*$/m, `$1 ${o.pingInterval}`);
    if (changed === yaml) throw new Error('internal/config/dev.yaml has no node.ping_interval line to change');
    const cfg = join(dir, 'dev.yaml');
    writeFileSync(cfg, changed);
    args.push('--config', cfg);
  }
  const proc = spawn(o.bin, args, {
    env: { ...process.env, TETHER_DEV_STATE: state },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const exited = new Promise((r) => proc.once('exit', (code, sig) => r({ code, sig })));
  await new Promise((resolve, reject) => {
    const onData = (b) => {
      stderr += b.toString();
      // The banner's state-file line comes after the file is written.
      if (/^ {2}state file /m.test(stderr)) {
        proc.stderr.off('data', onData);
        proc.stderr.on('data', (x) => (stderr += x.toString()));
        resolve();
      }
    };
    proc.stderr.on('data', onData);
    proc.stdout.resume();
    exited.then(({ code, sig }) => reject(new Error(`tether dev exited (${code ?? sig}) before it was up:\n${stderr}`)));
  });
  const st = JSON.parse(readFileSync(state, 'utf8'));
  if (st.pid !== proc.pid) throw new Error(`state file ${state} is not of our tether dev (pid ${st.pid}, want ${proc.pid})`);
  return {
    desc: { bin: o.bin, pid: proc.pid, natsUrl: st.nats_url, directoryUrl: st.directory_url, nodes: st.nodes, stateFile: state },
    stderr: () => stderr,
    /** Stops it (SIGTERM, then SIGKILL after 15s) and removes its files. */
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGCONT');
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The cluster for this test file: the shared one from $TETHER_JS_CLUSTER,
 * or a private one stopped when the process exits.
 */
export async function cluster() {
  if (process.env.TETHER_JS_CLUSTER) return tools(JSON.parse(readFileSync(process.env.TETHER_JS_CLUSTER, 'utf8')));
  const c = await startCluster({ bin: await tetherBin() });
  process.on('exit', () => {
    try {
      process.kill(c.desc.pid, 'SIGKILL');
    } catch {
      // gone
    }
  });
  const t = tools(c.desc);
  t.stop = () => c.stop();
  return t;
}

/** Helpers around a cluster description. */
export function tools(desc) {
  return {
    ...desc,
    stop: async () => {},
    /**
     * A device token from `tether token`.
     * @param {string} device @param {{service?: string, tier?: string, groups?: string[], ttl?: string}} [o]
     */
    async token(device, o = {}) {
      const args = ['token', '--service', o.service ?? 'vacuum', '--device', device, '--ttl', o.ttl ?? '1h'];
      if (o.tier) args.push('--tier', o.tier);
      for (const g of o.groups ?? []) args.push('--group', g);
      const { stdout } = await execFileP(desc.bin, args);
      return stdout.trim();
    },
    /** A vacuum token whose exp is in the past (the dev key, signed here). */
    expiredToken(device) {
      const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const now = Math.floor(Date.now() / 1000);
      const head = b64({ alg: 'HS256', kid: DEV_VACUUM.kid, typ: 'JWT' });
      const body = b64({ svc: 'vacuum', sub: device, iat: now - 7200, exp: now - 3600 });
      const sig = createHmac('sha256', DEV_VACUUM.secret).update(`${head}.${body}`).digest('base64url');
      return `${head}.${body}.${sig}`;
    },
  };
}

/** A token whose signature does not verify (the node answers 4001 bad_token). */
export function breakSignature(token) {
  const i = token.lastIndexOf('.');
  const sig = token.slice(i + 1);
  const flipped = sig[0] === 'A' ? 'B' + sig.slice(1) : 'A' + sig.slice(1);
  return token.slice(0, i + 1) + flipped;
}

/** A short random suffix for unique device and group names. */
export function uniq() {
  return Math.random().toString(36).slice(2, 8);
}
