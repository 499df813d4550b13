// Node entry point of the device side: as the browser entry, but when the
// runtime has no global WebSocket (Node 20 and older by default), or when
// auth "header" needs to set a header, devices use the `ws` package.
import { setWebSocketLoader } from './device.js';

setWebSocketLoader(async ({ headers }) => {
  if (!headers && typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  const mod = await import('ws');
  return mod.WebSocket ?? mod.default;
});

export * from './browser.js';
