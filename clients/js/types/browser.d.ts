// @tether/client in browsers: devices only.
export * from './device.js';
