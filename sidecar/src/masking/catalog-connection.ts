import { decodeErrorFields, decodeRowDescription } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { queryMessage } from '../protocol/frontend-messages.js';
import { type Credentials, connectUpstream, type UpstreamSession, type UpstreamTarget } from '../upstream/connect.js';
import { MessageReader } from '../upstream/message-reader.js';
import type { CatalogQuery } from './catalog-cache.js';
import { MaskingIoError } from './errors.js';

/**
 * A CatalogQuery over the sidecar's own upstream connection (separate from every client session, so a client can
 * neither see nor disturb it). Connects lazily, runs one simple Query at a time, reconnects after a failure.
 * Simple-query text results: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SIMPLE-QUERY
 */
export function upstreamCatalogQuery(
  target: UpstreamTarget,
  creds: Credentials | (() => Credentials),
): CatalogQuery & { close(): void } {
  let session: Promise<UpstreamSession> | undefined;
  let chain: Promise<unknown> = Promise.resolve();

  const run = async (sql: string): Promise<Array<Record<string, string | null>>> => {
    session ??= connectUpstream(target, typeof creds === 'function' ? creds() : creds, {
      application_name: 'pgwarden-catalog',
    });
    let s: UpstreamSession;
    try {
      s = await session;
    } catch (err) {
      session = undefined;
      throw new MaskingIoError('PGW_MASK_CATALOG', 'catalog connection failed', { cause: err });
    }
    const reader = new MessageReader(s.socket, 'upstream (catalog)');
    if (s.leftover.length) reader.unshift(s.leftover);
    const rows: Array<Record<string, string | null>> = [];
    let names: string[] = [];
    let failure: string | undefined;
    try {
      s.socket.write(queryMessage(sql));
      for (;;) {
        const m = await reader.next();
        if (m.type === B.RowDescription) names = decodeRowDescription(m.buf, 0, m.buf.length).map((f) => f.name);
        else if (m.type === B.DataRow) {
          const row: Record<string, string | null> = {};
          let pos = 7;
          for (const name of names) {
            const len = m.buf.readInt32BE(pos);
            pos += 4;
            row[name] = len < 0 ? null : m.buf.toString('utf8', pos, pos + len);
            if (len > 0) pos += len;
          }
          rows.push(row);
        } else if (m.type === B.ErrorResponse) failure = decodeErrorFields(m.buf, 0, m.buf.length).get('M');
        else if (m.type === B.ReadyForQuery) break;
      }
    } catch (err) {
      session = undefined;
      s.socket.destroy();
      throw new MaskingIoError('PGW_MASK_CATALOG', 'catalog query failed', { cause: err });
    } finally {
      s.leftover = reader.detach();
    }
    if (failure !== undefined) throw new MaskingIoError('PGW_MASK_CATALOG', `catalog query failed: ${failure}`);
    return rows;
  };

  const query = (sql: string) => {
    const p = chain.then(() => run(sql));
    chain = p.catch(() => undefined);
    return p;
  };
  return Object.assign(query, {
    close(): void {
      void session?.then((s) => s.socket.destroy()).catch(() => undefined);
      session = undefined;
    },
  });
}
