// What every entry point exports: errors, names, encoding helpers, frames.
export { TetherError, ErrorCode } from './errors.js';
export { validName, isValidName, nameProblem, validConnId, isValidConnId, connIdProblem, MAX_NAME_LEN } from './names.js';
export { toBase64, fromBase64 } from './encoding.js';
export { SUBPROTOCOL, Push } from './frames.js';
export { Backoff } from './backoff.js';
