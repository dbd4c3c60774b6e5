import type { Socket } from 'node:net';
import { decodeErrorFields, decodeRowDescription } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { queryMessage } from '../protocol/frontend-messages.js';
import { type Credentials, connectUpstream, type UpstreamSession, type UpstreamTarget } from '../upstream/connect.js';
import { UpstreamError } from '../upstream/errors.js';
import { MessageReader } from '../upstream/message-reader.js';
import type { CatalogQuery } from './catalog-cache.js';
import { MaskingIoError } from './errors.js';

/** Default --catalog-query-timeout. */
export const DEFAULT_CATALOG_QUERY_TIMEOUT_MS = 5000;

/**
 * How much longer than the server's own statement_timeout the sidecar waits for an answer before it takes the
 * connection for dead: long enough for the cancellation's ErrorResponse to arrive from a server that is merely slow.
 */
const ANSWER_GRACE_MS = 1000;

/**
 * PostgreSQL's cancellations by these timeouts (57014 query_canceled covers statement_timeout, 55P03
 * lock_not_available lock_timeout): https://www.postgresql.org/docs/current/runtime-config-client.html
 */
const TIMEOUT_SQLSTATES = new Set(['57014', '55P03']);

export interface CatalogConnectionOptions {
  /**
   * The longest one catalog query may take (default 5 s). PostgreSQL cancels it then (statement_timeout, and
   * lock_timeout at half of it, set on the connection); a connection that has not answered ANSWER_GRACE_MS later,
   * nor opened in that time, is closed, and the next query opens a new one.
   */
  queryTimeoutMs?: number;
}

/** One (re)connection: its socket once connected, so that a deadline can end it whatever it is waiting for. */
interface Link {
  session: Promise<UpstreamSession>;
  socket?: Socket;
  dead: boolean;
}

/**
 * A CatalogQuery over the sidecar's own upstream connection (separate from every client session, so a client can
 * neither see nor disturb it). Connects lazily, runs one simple Query at a time, reconnects after a failure.
 * Simple-query text results: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SIMPLE-QUERY
 */
export function upstreamCatalogQuery(
  target: UpstreamTarget,
  creds: Credentials | (() => Credentials),
  options: CatalogConnectionOptions = {},
): CatalogQuery & { close(): void } {
  const timeoutMs = Math.max(1, Math.round(options.queryTimeoutMs ?? DEFAULT_CATALOG_QUERY_TIMEOUT_MS));
  const deadlineMs = timeoutMs + ANSWER_GRACE_MS;
  let link: Link | undefined;
  let chain: Promise<unknown> = Promise.resolve();

  const end = (l: Link): void => {
    l.dead = true;
    l.socket?.destroy();
    if (link === l) link = undefined;
  };

  const open = (): Link => {
    const l: Link = { dead: false } as Link;
    l.session = (async () => {
      const s = await connectUpstream(
        { ...target, connectTimeoutMs: Math.min(target.connectTimeoutMs ?? deadlineMs, deadlineMs) },
        typeof creds === 'function' ? creds() : creds,
        { application_name: 'pgwarden-catalog' },
      );
      l.socket = s.socket;
      // Between queries no reader listens: a reset or a server that ends the connection must not throw, and the
      // next query opens a new one.
      s.socket.on('error', () => undefined).on('close', () => end(l));
      if (l.dead) {
        s.socket.destroy();
        throw new MaskingIoError('PGW_MASK_CATALOG_TIMEOUT', 'catalog connection abandoned');
      }
      // Set by SET rather than in the StartupMessage: poolers such as PgBouncer refuse unknown startup parameters.
      // A lock on a catalog (LOCK, VACUUM FULL pg_class) then ends as a lock timeout, which the log names as such.
      await exchange(
        s,
        `SET statement_timeout = ${timeoutMs}; SET lock_timeout = ${Math.max(1, Math.floor(timeoutMs / 2))}`,
      );
      return s;
    })();
    return l;
  };

  const exec = async (l: Link, sql: string): Promise<Array<Record<string, string | null>>> => {
    let s: UpstreamSession;
    try {
      s = await l.session;
    } catch (err) {
      end(l);
      if (err instanceof MaskingIoError) throw err;
      const timeout = err instanceof UpstreamError && err.code === 'PGW_UPSTREAM_TIMEOUT';
      throw new MaskingIoError(timeout ? 'PGW_MASK_CATALOG_TIMEOUT' : 'PGW_MASK_CATALOG', 'catalog connection failed', {
        cause: err,
      });
    }
    try {
      return await exchange(s, sql);
    } catch (err) {
      // An ErrorResponse leaves the connection ready for the next query; anything else leaves it unusable.
      if (!(err instanceof MaskingIoError)) {
        end(l);
        throw new MaskingIoError('PGW_MASK_CATALOG', 'catalog query failed', { cause: err });
      }
      throw err;
    }
  };

  /** The query, or a timeout error once the deadline passes (the connection is then closed whatever it was doing). */
  const run = (sql: string): Promise<Array<Record<string, string | null>>> => {
    if (link?.dead) link = undefined;
    link ??= open();
    const l = link;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        end(l);
        reject(
          new MaskingIoError(
            'PGW_MASK_CATALOG_TIMEOUT',
            `catalog connection did not answer within ${deadlineMs} ms; closed it`,
          ),
        );
      }, deadlineMs);
      exec(l, sql)
        .then(resolve, reject)
        .finally(() => clearTimeout(timer));
    });
  };

  const query = (sql: string) => {
    const p = chain.then(() => run(sql));
    chain = p.catch(() => undefined);
    return p;
  };
  return Object.assign(query, {
    close(): void {
      if (link) end(link);
    },
  });
}

/** One simple Query and its rows; an ErrorResponse is thrown as a MaskingIoError once ReadyForQuery has come. */
async function exchange(s: UpstreamSession, sql: string): Promise<Array<Record<string, string | null>>> {
  const reader = new MessageReader(s.socket, 'upstream (catalog)');
  if (s.leftover.length) reader.unshift(s.leftover);
  const rows: Array<Record<string, string | null>> = [];
  let names: string[] = [];
  let failure: Map<string, string> | undefined;
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
      } else if (m.type === B.ErrorResponse) failure ??= decodeErrorFields(m.buf, 0, m.buf.length);
      else if (m.type === B.ReadyForQuery) break;
    }
  } finally {
    s.leftover = reader.detach();
  }
  if (failure !== undefined) {
    const code = failure.get('C') ?? '';
    throw new MaskingIoError(
      TIMEOUT_SQLSTATES.has(code) ? 'PGW_MASK_CATALOG_TIMEOUT' : 'PGW_MASK_CATALOG',
      `catalog query failed: ${failure.get('M') ?? 'unknown error'} (SQLSTATE ${code})`,
    );
  }
  return rows;
}
