// Node entry point: devices (with `ws` when the runtime has no WebSocket)
// and apps (with the `nats` package).
export * from './node-device.js';
export * from './app-entry.js';
