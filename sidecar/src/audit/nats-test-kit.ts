import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { AUDIT_STREAM, type AuditEvent } from '@pgwarden/policy';
import type { SessionInfo, StatementRecord } from '../proxy/hooks.js';
import type { AuditSink } from './audit-sink.js';

/** Test support (not shipped through index.ts): read back the audit stream, and realistic hook inputs. */

export interface StoredAuditMessage {
  subject: string;
  /** The id of the JetStream message the event came in (shared by the events of one batch). */
  msgID: string | undefined;
  /** Events in that message (its `Pgwarden-Batch` header; 1 without one). */
  batch: number;
  event: AuditEvent;
}

/** Every event in PGWARDEN_AUDIT, in stream order (a batch message gives one entry per line). */
export async function readAuditStream(url: string): Promise<StoredAuditMessage[]> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const total = (await jsm.streams.info(AUDIT_STREAM)).state.messages;
    const out: StoredAuditMessage[] = [];
    if (total === 0) return out;
    let seen = 0;
    const consumer = await jetstream(nc).consumers.get(AUDIT_STREAM);
    const iter = await consumer.consume({ max_messages: 1000 });
    for await (const m of iter) {
      const msgID = m.headers?.get('Nats-Msg-Id');
      const lines = m.string().split('\n');
      const batch = Number(m.headers?.get('Pgwarden-Batch') || 1);
      if (batch !== lines.length)
        throw new Error(`message ${msgID}: header says ${batch} events, body has ${lines.length}`);
      for (const line of lines) out.push({ subject: m.subject, msgID, batch, event: JSON.parse(line) as AuditEvent });
      if (++seen >= total) break;
    }
    await iter.close();
    return out;
  } finally {
    await nc.close();
  }
}

export function sessionInfo(id: string, namespace = 'agents'): SessionInfo {
  return {
    id,
    startedAt: new Date(),
    client: { address: '127.0.0.1', port: 50000 },
    startup: { user: 'agent', database: 'app', params: {} },
    identity: { namespace, serviceAccount: 'agent', pod: 'agent-0', groups: [] },
    upstream: { host: '127.0.0.1', port: 5432, database: 'app', user: 'app_scram', tls: false },
  };
}

export function selectRecord(i: number): StatementRecord {
  return {
    request: { sql: `SELECT ${i}`, protocol: 'simple', txStatus: 'I' },
    verdict: { action: 'allow', rule: 'read', policy: { name: 'analytics.agent', hash: 'sha256:1' } },
    results: [{ tag: 'SELECT 1', rows: 1, bytes: 12 }],
    startedAt: new Date(),
    durationMs: 0.5,
    upstreamMs: 0.4,
    heldMs: 0,
  };
}

/** Per session: the seqs found, sorted, and how often each occurred. */
export function seqsBySession(events: AuditEvent[]): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const e of events) {
    const a = m.get(e.session.id) ?? [];
    a.push(e.session.seq);
    m.set(e.session.id, a);
  }
  for (const a of m.values()) a.sort((x, y) => x - y);
  return m;
}

/** `sink`, noting the seq of each event of session `id` it is given (what was written, per round). */
export function noting(sink: AuditSink, id: string, seqs: number[]): AuditSink {
  const note = (session: unknown, seq: unknown) => {
    if (session === id && typeof seq === 'number') seqs.push(seq);
  };
  // Not a spread: a class's methods are on its prototype.
  return {
    ready: () => sink.ready(),
    onGap: (l) => sink.onGap?.(l),
    flush: () => sink.flush?.(),
    close: () => sink.close(),
    emit(e) {
      const s = e.session as { id?: string; seq?: number } | undefined;
      note(s?.id, s?.seq);
      sink.emit(e);
    },
    emitJson(json, session, seq) {
      note(session, seq);
      sink.emitJson!(json, session, seq);
    },
  };
}
