#!/usr/bin/env node
// Runs every JS test of @tether/client from one entry (npm test, test.sh):
// the type check, the unit tests, then, against one real `tether dev`
// started here on free ports, the integration tests and the conformance
// suite in Node and in headless Chromium.
//
//   node test/run.js           everything
//   node test/run.js --unit    type check and unit tests only (no Go, no browser)
//   node test/run.js FILE...   these test files, with the cluster
//
// $TETHER_BIN: a tether binary to use (default: built here once with go build).
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pkgDir, buildTether, startCluster } from './helpers/cluster.js';

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const files = args.filter((a) => !a.startsWith('--'));

function run(cmd, argv, env = process.env) {
  return new Promise((resolve) => {
    const p = spawn(cmd, argv, { cwd: pkgDir, env, stdio: 'inherit' });
    p.on('exit', (code, sig) => resolve(code ?? (sig ? 1 : 0)));
    p.on('error', (err) => {
      console.error(`${cmd}: ${err.message}`);
      resolve(1);
    });
  });
}

function testFiles(dir) {
  return readdirSync(join(pkgDir, dir))
    .filter((f) => f.endsWith('.test.js'))
    .sort()
    .map((f) => join(dir, f));
}

const tmp = mkdtempSync(join(tmpdir(), 'tether-js-test-'));
let cluster = null;
let code = 0;
const cleanup = async () => {
  if (cluster) await cluster.stop();
  cluster = null;
  rmSync(tmp, { recursive: true, force: true });
};
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(130);
  });
}

try {
  if (files.length === 0) {
    console.log('# type check (tsc -p test/types/tsconfig.json)');
    code = await run(process.execPath, [join(pkgDir, 'node_modules/typescript/bin/tsc'), '-p', 'test/types/tsconfig.json']);
    if (code !== 0) throw new Error('the type check failed');
  }
  let list = files.map((f) => relative(pkgDir, f));
  if (list.length === 0) list = unitOnly ? testFiles('test/unit') : [...testFiles('test/unit'), ...testFiles('test/integration'), ...testFiles('test/conformance')];
  const env = { ...process.env };
  if (!unitOnly && list.some((f) => !f.startsWith('test/unit/'))) {
    if (!env.TETHER_BIN) {
      console.log('# building tether (go build)');
      env.TETHER_BIN = await buildTether(tmp);
    }
    cluster = await startCluster({ bin: env.TETHER_BIN });
    const desc = join(tmp, 'cluster.json');
    writeFileSync(desc, JSON.stringify(cluster.desc));
    env.TETHER_JS_CLUSTER = desc;
    console.log(`# tether dev: NATS ${cluster.desc.natsUrl}, directory ${cluster.desc.directoryUrl}, ${cluster.desc.nodes.length} nodes`);
  }
  // One file at a time: the integration files share the cluster and the
  // machine may have two cores.
  const [major, minor] = process.versions.node.split('.').map(Number);
  const flags = [];
  if (major > 20 || (major === 20 && minor >= 10)) flags.push('--test-concurrency=1');
  // A broken feature must fail its test, not hang the run.
  if (major > 20 || (major === 20 && minor >= 11)) flags.push('--test-timeout=300000');
  code = await run(process.execPath, ['--test', ...flags, ...list], env);
} catch (err) {
  console.error(`test/run.js: ${err.message}`);
  if (cluster) console.error(`tether dev stderr:\n${cluster.stderr()}`);
  code = code || 1;
} finally {
  await cleanup();
}
process.exit(code);
