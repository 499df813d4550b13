// Types of the device side of @tether/client (browser and Node).
import type { TetherError, Bytes } from './common.js';
export * from './common.js';

/** A frame from the node; see docs/protocol.md. Unknown fields are kept. */
export interface Frame {
  type: string;
  id?: string;
  [key: string]: unknown;
}

/** The node's welcome frame. */
export interface Welcome extends Frame {
  type: 'welcome';
  /** The connection ID, <node>.<local>. */
  conn: string;
  service: string;
  device: string;
  node: string;
  tier?: string;
  groups?: string[];
  /** The node writes at least one frame every ping_ms (see the README's Liveness). */
  ping_ms: number;
  /** The largest frame the node accepts, in bytes. */
  max_frame: number;
}

/** A push as onPush receives it. */
export declare class Push {
  /** The node's delivery ID, echoed in the ack. */
  readonly id: string;
  /** The app's message ID, when it gave one. */
  readonly msgId: string | undefined;
  /** The app asked for no ack; none is sent. */
  readonly noAck: boolean;
  /** The payload came base64-encoded (bytes that are not JSON): data is a Uint8Array. */
  readonly binary: boolean;
  /** The JSON value the app sent, or its bytes when binary; null for an empty payload. */
  readonly data: unknown;
  /** When the frame was read (Date.now()). */
  readonly received: number;
  /** The payload as bytes (the JSON text as UTF-8, or the decoded bytes). */
  bytes(): Uint8Array;
  /** The payload as text. */
  text(): string;
}

/** Data a device sends (msg, ack): bytes and strings as UTF-8 go as is (JSON embedded, else base64); other values JSON-encoded. */
export type DeviceData = Bytes | string | number | boolean | null | object;

/** What onPush returns: a result string ("" or nothing means "ok"), or a result with data. */
export type PushResult = string | void | undefined | null | { result?: string; data?: DeviceData };

/** The WebSocket constructor a Device uses (browser WebSocket, `ws`, or any compatible one). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: any) => any;

export interface DeviceOptions {
  /** The service; required with directoryUrl unless clientId is given. Sent to the node, which refuses a token of another service (4003). */
  service?: string;
  /** The device token (a JWT from the app server, `tether token`, or POST /v1/negotiate). */
  token?: string;
  /** Returns a token; called when there is none, and once after a 4001/4002 refusal. */
  tokenFn?: () => string | Promise<string>;
  /** Base URL of the directory; GET {directoryUrl}/v1/nodes?service=S&client=C gives the node list. */
  directoryUrl?: string;
  /** Sent to the directory as ?client=, so that it resolves the tier (and the service). */
  clientId?: string;
  /** A fixed node list (ws:// or wss:// URLs), tried in order; without directoryUrl, or its fallback when the directory fails. */
  nodes?: string[];
  /** How the token is sent: "query" (?token=, default; works in browsers), "frame" (first frame), "header" (Authorization; Node `ws` only). */
  auth?: 'query' | 'frame' | 'header';
  /** Handles a push; runs one push at a time, in order. Default: ack "ok". A throw acks "error". */
  onPush?: (push: Push) => PushResult | Promise<PushResult>;
  /** Called after each successful authentication. */
  onWelcome?: (welcome: Welcome) => void;
  /** Called when a connection that opened ends: the node's close code (1006 when the socket just ended) and reason. */
  onClose?: (code: number, reason: string) => void;
  /** Called with every frame but welcome and push (pong, ack, error, reconnect, unknown types). */
  onFrame?: (frame: Frame) => void;
  /** Called with non-fatal problems: directory, token, connect and protocol errors, handler failures. */
  onError?: (err: TetherError) => void;
  /** Called once when the device stops: null after stop(), a TetherError (refused, replaced) after a terminal close. */
  onStop?: (err: TetherError | null) => void;
  /** First backoff ceiling in ms (default 100). */
  minBackoff?: number;
  /** Largest backoff ceiling in ms (default 10000). */
  maxBackoff?: number;
  /** Bound on one connection attempt, from opening the socket to the welcome, in ms (default 5000). */
  connectTimeout?: number;
  /** Bound on one directory request, in ms (default 5000). */
  directoryTimeout?: number;
  /** The WebSocket constructor. Default: globalThis.WebSocket, or `ws` in Node when there is none. */
  webSocket?: WebSocketConstructor;
  /** The fetch for directory requests. Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** Random numbers in [0, 1) for the backoff jitter (default Math.random); for tests. */
  random?: () => number;
}

export type DeviceStateValue = 'idle' | 'connecting' | 'connected' | 'backoff' | 'stopped';
export declare const DeviceState: {
  readonly IDLE: 'idle';
  readonly CONNECTING: 'connecting';
  readonly CONNECTED: 'connected';
  readonly BACKOFF: 'backoff';
  readonly STOPPED: 'stopped';
};

export interface DeviceStats {
  /** Welcomes received. */
  connects: number;
  /** Connections that ended and were followed by a reconnect. */
  reconnects: number;
  /** WebSockets opened (attempts). */
  attempts: number;
  pushes: number;
  acks: number;
  /** Upstream msg frames sent. */
  sent: number;
  /** Application pings sent (liveness and ping()). */
  pings: number;
  pongs: number;
  state: DeviceStateValue;
  conn: string | null;
  node: string | null;
}

export interface DeviceEvents {
  welcome: (welcome: Welcome) => void;
  close: (code: number, reason: string) => void;
  frame: (frame: Frame) => void;
  ack: (ack: { id: string; result: string }) => void;
  backoff: (delayMs: number) => void;
  error: (err: TetherError) => void;
  stop: (err: TetherError | null) => void;
}

export declare class Device {
  constructor(options: DeviceOptions);
  /** Settles when the device has stopped: null after stop(), a TetherError (refused, replaced) after a terminal close. Never rejects. */
  readonly done: Promise<TetherError | null>;
  /** Starts connecting; returns the device. */
  start(): this;
  /** Closes the connection (1000 "stopped") and stops reconnecting; resolves when stopped. */
  stop(): Promise<void>;
  /** Sends an upstream msg. With id: resolves with the node's ack frame, rejects with node_error on its error frame. */
  send(data?: DeviceData, id?: string): Promise<Frame | undefined>;
  /** Sends an application ping; resolves with the pong. */
  ping(o?: { timeoutMs?: number }): Promise<Frame>;
  /** Resolves with the welcome once connected. */
  waitConnected(o?: { timeoutMs?: number; signal?: AbortSignal }): Promise<Welcome>;
  /** The current welcome, or null. */
  readonly welcome: Welcome | null;
  readonly connected: boolean;
  readonly state: DeviceStateValue;
  stats(): DeviceStats;
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof DeviceEvents>(type: K, fn: DeviceEvents[K]): () => void;
  off<K extends keyof DeviceEvents>(type: K, fn: DeviceEvents[K]): void;
}

/** GET {directoryUrl}/v1/nodes?service=S&client=C. */
export declare function fetchNodes(
  directoryUrl: string,
  o?: { service?: string; clientId?: string; fetch?: typeof fetch; timeoutMs?: number; signal?: AbortSignal },
): Promise<{ service: string; tier: string; handshakeUrl: string[] }>;

/** Sets how devices find their WebSocket constructor when none is given (the Node entries install `ws`). */
export declare function setWebSocketLoader(loader: (need: { headers: boolean }) => WebSocketConstructor | undefined | Promise<WebSocketConstructor | undefined>): void;
