// The conformance checks with the device in headless Chromium: the page
// loads the browser entry as plain ES modules from a local HTTP server
// (which also relays GET /v1/nodes to the directory, so that the page
// reaches the directory from its own origin), and the checks drive it over
// the DevTools protocol. Fails when Chromium is missing.
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import { connectApp } from '../../src/index.js';
import { cluster, pkgDir } from '../helpers/cluster.js';
import { launch } from '../browser/cdp.js';
import { defineChecks } from './checks.js';

async function serve(directoryUrl) {
  const srv = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://page');
    try {
      if (url.pathname === '/v1/nodes') {
        const r = await fetch(directoryUrl + url.pathname + url.search);
        res.writeHead(r.status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
        res.end(await r.text());
        return;
      }
      if (url.pathname === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end('<!doctype html><meta charset="utf-8"><title>tether conformance</title><p>tether</p>');
        return;
      }
      const rel = normalize(decodeURIComponent(url.pathname)).replace(/^\/+/, '');
      if (!/^(src|test\/conformance|test\/browser)\/[\w./-]+\.js$/.test(rel) || rel.includes('..')) {
        res.writeHead(404).end();
        return;
      }
      const body = await readFile(join(pkgDir, rel));
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(body);
    } catch (err) {
      res.writeHead(err.code === 'ENOENT' ? 404 : 500).end(String(err.message));
    }
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { srv, origin: `http://127.0.0.1:${srv.address().port}` };
}

let envP;
function env() {
  envP ??= (async () => {
    const c = await cluster();
    const app = await connectApp({ servers: c.natsUrl });
    const { srv, origin } = await serve(c.directoryUrl);
    const browser = await launch();
    const page = await browser.newPage();
    await page.goto(origin + '/');
    await page.evaluate(`import('/test/browser/page.js').then((m) => { window.harness = m.harness; return true; })`);
    const call = (id, method, args) =>
      page.evaluate(`window.harness.call(${id}, ${JSON.stringify(method)}, ${JSON.stringify(args)})`);
    const driver = {
      name: 'chromium',
      directoryUrl: origin,
      async create(opts) {
        const id = await page.evaluate(`window.harness.create(${JSON.stringify(opts)})`);
        const h = {};
        for (const m of ['start', 'find', 'waitFor', 'send', 'ping', 'stats', 'stop']) {
          h[m] = (...args) => call(id, m, args);
        }
        return h;
      },
    };
    return { cluster: c, app, driver, browser, page, srv };
  })();
  return envP;
}

after(async () => {
  if (!envP) return;
  const e = await envP.catch(() => null);
  if (!e) return;
  if (e.page.console.length) process.stderr.write(`page console:\n${e.page.console.join('\n')}\n`);
  await e.browser.close();
  await new Promise((r) => e.srv.close(r));
  await e.app.close();
  await e.cluster.stop();
});

test('the page runs the browser entry: native WebSocket, no Node', { timeout: 120_000 }, async (t) => {
  const e = await env();
  const rt = await e.page.evaluate('window.harness.runtime()');
  assert.match(rt.userAgent, /HeadlessChrome|Chrome/);
  assert.equal(rt.nativeWebSocket, true);
  assert.equal(rt.hasProcess, false);
  assert.ok(rt.exports.includes('Device') && !rt.exports.includes('connectApp'), rt.exports.join(' '));
  t.diagnostic(e.browser.version);
});

defineChecks(test, env);
