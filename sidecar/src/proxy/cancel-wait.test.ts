import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { cancelRequest } from '../protocol/frontend-messages.js';
import { errorOf, msg, RawClient } from '../testing/raw-client.js';
import { type Fixture, startFixture, untilRunning } from '../testing/sidecar-fixture.js';

/** PostgreSQL's CancelRequest code (protocol-message-formats.html). */
const CANCEL_CODE = 80877102;
/** How long the tap holds a cancel before passing it on: a postmaster slow to fork its cancel child. */
const SLOW_POSTMASTER_MS = 300;

/**
 * A TCP tap between the sidecar and PostgreSQL: passes every connection through, but holds a CancelRequest for
 * SLOW_POSTMASTER_MS and records when PostgreSQL closed each cancel connection (it closes once it has signalled the
 * backend).
 */
async function startTap(target: { host: string; port: number }): Promise<{
  server: Server;
  port: number;
  cancelsClosedAt: number[];
}> {
  const cancelsClosedAt: number[] = [];
  // Half-open: the sidecar ends its side right after the cancel, and must see its connection close only when
  // PostgreSQL closes.
  const server = createServer({ allowHalfOpen: true }, (client: Socket) => {
    const upstream = connect(target.port, target.host);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    let first = true;
    // The sidecar sends a cancel and ends its side at once: both wait behind the held cancel.
    let held: Promise<void> = Promise.resolve();
    client.on('data', (chunk: Buffer) => {
      const isCancel =
        first && chunk.length >= 8 && chunk.readInt32BE(0) === 16 && chunk.readInt32BE(4) === CANCEL_CODE;
      first = false;
      if (!isCancel) {
        upstream.write(chunk);
        return;
      }
      upstream.on('close', () => cancelsClosedAt.push(performance.now()));
      held = new Promise((r) =>
        setTimeout(() => {
          upstream.write(chunk);
          r();
        }, SLOW_POSTMASTER_MS),
      );
    });
    client.on('end', () => void held.then(() => upstream.end()));
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    upstream.on('close', () => client.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, cancelsClosedAt };
}

describe('a CancelRequest through the sidecar', () => {
  let fx: Fixture;
  let tap: Awaited<ReturnType<typeof startTap>>;
  beforeAll(async () => {
    const pg = inject('pg');
    tap = await startTap({ host: pg.host, port: pg.port });
    fx = await startFixture({
      upstream: { host: '127.0.0.1', port: tap.port, database: pg.database, sslmode: 'disable' },
    });
  });
  afterAll(async () => {
    await fx.sidecar.close(500);
    tap.server.close();
  });

  it("closes the client's cancel connection only after PostgreSQL took the cancel, as the postmaster does", async () => {
    // libpq's PQcancel waits for this close before it returns: if the sidecar closed at once, the client's next
    // statement could start before the cancel reached PostgreSQL and be the one cancelled.
    const { client, messages } = await RawClient.startup(fx.sidecar.port);
    const key = messages.find((x) => x.type === B.BackendKeyData)!;
    client.send(msg.query('SELECT pg_sleep(20) /* cancel-wait */'));
    await untilRunning(fx, '/* cancel-wait */');
    const canceller = await RawClient.open(fx.sidecar.port);
    const sentAt = performance.now();
    canceller.send(cancelRequest(key.buf.readInt32BE(5), key.buf.readInt32BE(9)));
    await canceller.closed();
    const closedAt = performance.now();
    expect(tap.cancelsClosedAt).toHaveLength(1);
    expect(closedAt).toBeGreaterThanOrEqual(tap.cancelsClosedAt[0]);
    expect(closedAt - sentAt).toBeGreaterThanOrEqual(SLOW_POSTMASTER_MS - 5);
    const m = await client.untilReady();
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('57014');
    client.close();
  });

  it('closes a cancel connection with a key that matches nothing at once, and cancels nothing', async () => {
    const { client, messages } = await RawClient.startup(fx.sidecar.port);
    const key = messages.find((x) => x.type === B.BackendKeyData)!;
    const before = tap.cancelsClosedAt.length;
    const canceller = await RawClient.open(fx.sidecar.port);
    const sentAt = performance.now();
    canceller.send(cancelRequest(key.buf.readInt32BE(5), key.buf.readInt32BE(9) ^ 1));
    await canceller.closed();
    expect(performance.now() - sentAt).toBeLessThan(SLOW_POSTMASTER_MS);
    client.send(msg.query('SELECT 1'));
    const m = await client.untilReady();
    expect(m.some((x) => x.type === B.ErrorResponse)).toBe(false);
    expect(tap.cancelsClosedAt).toHaveLength(before);
    client.close();
  });
});
