// Browser entry point: the device side only, as plain ES modules with no
// Node imports. Devices use globalThis.WebSocket.
export * from './common.js';
export { Device, DeviceState, fetchNodes, setWebSocketLoader } from './device.js';
