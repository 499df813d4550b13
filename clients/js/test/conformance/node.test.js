// The conformance checks with the device in Node (the `ws` package, since
// Node 20 has no global WebSocket).
import test, { after } from 'node:test';
import { Device, connectApp } from '../../src/index.js';
import { cluster } from '../helpers/cluster.js';
import { Recorder } from './recorder.js';
import { defineChecks } from './checks.js';

let envP;
function env() {
  envP ??= (async () => {
    const c = await cluster();
    const app = await connectApp({ servers: c.natsUrl });
    const driver = {
      name: 'node',
      directoryUrl: c.directoryUrl,
      async create(opts) {
        return new Recorder(Device, opts);
      },
    };
    return { cluster: c, app, driver };
  })();
  return envP;
}

after(async () => {
  if (!envP) return;
  const e = await envP;
  await e.app.close();
  await e.cluster.stop();
});

defineChecks(test, env);
