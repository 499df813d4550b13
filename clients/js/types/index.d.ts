// @tether/client in Node: devices and apps.
export * from './device.js';
export * from './app.js';
