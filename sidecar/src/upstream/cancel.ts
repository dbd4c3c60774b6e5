import { cancelRequest } from '../protocol/frontend-messages.js';
import { openTransport, type UpstreamTarget } from './connect.js';

/**
 * Sends a CancelRequest for an upstream backend on a new connection, over TLS when the sslmode asks for it (the
 * server accepts the request after the SSL handshake). PostgreSQL answers nothing and closes the connection
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS).
 */
export async function sendCancel(target: UpstreamTarget, processId: number, secretKey: number): Promise<void> {
  const { socket } = await openTransport({ ...target, connectTimeoutMs: target.connectTimeoutMs ?? 5_000 });
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      socket.destroy();
      done();
    }, 5_000);
    socket.on('error', done);
    socket.on('close', done);
    socket.resume();
    socket.end(cancelRequest(processId, secretKey));
  });
}
