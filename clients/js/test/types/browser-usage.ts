import { Device, fetchNodes } from '@tether/client/browser';

const d = new Device({ service: 'vacuum', token: 't', nodes: ['wss://node/ws'], webSocket: WebSocket });
void d.start();
void fetchNodes('https://dir', { service: 'vacuum' });
// @ts-expect-error the browser entry has no app side
import('@tether/client/browser').then((m) => m.connectApp);
