import {
  type AuditControl,
  type AuditEvent,
  type AuditSigner,
  canonicalJson,
  formatAuditTime,
  newChain,
  sealEvent,
  type UnsealedAuditEvent,
} from '@pgwarden/policy';

/**
 * Realistic, correctly chained audit events (sealed with the shared schema-v1 code) for tests and the ingest
 * benchmark. Not a mock of the sidecar: the fault-proof test drives the real sidecar.
 */
export interface SessionSpec {
  id: string;
  statements: number;
  namespace?: string;
  policy?: string;
  user?: string;
  /** Epoch µs of the first event; later events are 1 ms apart. */
  startMicros?: number;
  /** Every n-th statement is denied. */
  denyEvery?: number;
  /** `result.changed` of the allowed statements (a sidecar under guardrails.maxRowsAffected reports it). */
  changed?: number;
  tables?: string[];
  /** Emit session.end after the statements (default true). */
  end?: boolean;
  /**
   * Sign the chain as a sidecar with `--audit-signing-key` does: an `audit.checkpoint` right after session.end and,
   * with `checkpointEvery`, after every that many statements.
   */
  signer?: AuditSigner;
  checkpointEvery?: number;
  /** `source.instance` (default `test-sidecar`): the sidecar whose own chain (makeHeads) speaks for the session. */
  instance?: string;
}

export function makeSession(s: SessionSpec): AuditEvent[] {
  const chain = newChain();
  let t = s.startMicros ?? Date.UTC(2026, 10, 30, 12) * 1000;
  const base = {
    v: 1 as const,
    source: { instance: s.instance ?? 'test-sidecar' },
    identity: {
      namespace: s.namespace ?? 'agents',
      serviceAccount: 'analytics',
      pod: 'analytics-0',
      groups: ['data-team'],
      ...(s.user ? { user: s.user } : {}),
    },
    database: { host: 'orders-db', name: 'orders', user: 'agent', role: 'analytics_ro' },
    policy: { name: s.policy ?? 'analytics-agent', hash: 'sha256:0000' },
  };
  const next = (u: Omit<UnsealedAuditEvent, 'v' | 'time' | 'session'>) => {
    const e = sealEvent(
      { ...base, ...u, time: formatAuditTime(t), session: { id: s.id } } as UnsealedAuditEvent,
      chain,
    );
    t += 1000;
    return e;
  };
  const checkpoint = () => {
    if (s.signer && chain.prevHash !== null)
      out.push(next({ type: 'audit.checkpoint', checkpoint: s.signer.checkpoint(s.id, chain.seq, chain.prevHash) }));
  };
  const out: AuditEvent[] = [next({ type: 'session.start' } as never)];
  for (let i = 0; i < s.statements; i++) {
    const denied = s.denyEvery !== undefined && (i + 1) % s.denyEvery === 0;
    const tables = s.tables ?? ['public.orders'];
    out.push(
      next({
        type: 'statement',
        statement: {
          text: denied ? `DELETE FROM ${tables[0]}` : `SELECT * FROM ${tables[0]} WHERE id = ${i}`,
          kind: denied ? 'delete' : 'select',
          tables,
          functions: [],
        },
        decision: denied
          ? { action: 'deny', rule: 'writes-need-approval', reason: 'no rule allows delete', code: '42501' }
          : { action: 'allow', rule: 'read-orders' },
        result: denied
          ? { rows: 0, bytes: 0, error: { code: '42501', message: 'denied by pgwarden' } }
          : { tag: 'SELECT 1', rows: 1, bytes: 42, ...(s.changed !== undefined ? { changed: s.changed } : {}) },
        timing: { start: formatAuditTime(t), durationMs: 0.4, upstreamMs: 0.3, heldMs: 0 },
      } as never),
    );
    if (s.checkpointEvery !== undefined && (i + 1) % s.checkpointEvery === 0) checkpoint();
  }
  if (s.end !== false) {
    out.push(next({ type: 'session.end', end: { statements: s.statements, durationMs: s.statements } } as never));
    checkpoint();
  }
  return out;
}

/**
 * The JSON text a sidecar publishes for an event (`sealEventToJson` in @pgwarden/policy): the canonical JSON of
 * the event without `hash`, with the hash member appended last.
 */
export function sidecarJson(e: AuditEvent): string {
  const { hash, ...rest } = e;
  return `${canonicalJson(rest).slice(0, -1)},"hash":"${hash}"}`;
}

/**
 * A sidecar's own chain (`sidecar-<instance>`) holding one `audit.heads` event per entry of `rounds`, each naming
 * the latest event of the given session events (as the recorder's tick does), in the shape of
 * sidecar/src/audit/audit-recorder.ts.
 */
export function makeHeads(
  instance: string,
  rounds: readonly (readonly AuditEvent[][])[],
  opts: { namespace?: string; refreshMs?: number; startMicros?: number } = {},
): AuditEvent[] {
  const chain = newChain();
  const id = `sidecar-${instance}`;
  let t = opts.startMicros ?? Date.UTC(2026, 10, 30, 13) * 1000;
  return rounds.map((sessions) => {
    const e = sealEvent(
      {
        v: 1,
        type: 'audit.heads',
        time: formatAuditTime(t),
        session: { id },
        source: { instance },
        identity: { namespace: opts.namespace ?? 'agents', groups: [] },
        policy: { name: 'analytics-agent', hash: 'sha256:0000' },
        heads: {
          chains: sessions.map((events) => {
            const last = events[events.length - 1];
            return { id: last.session.id, seq: last.session.seq, hash: last.hash };
          }),
          ...(opts.refreshMs ? { refreshMs: opts.refreshMs } : {}),
        },
      },
      chain,
    );
    t += 1000;
    return e;
  });
}

/**
 * A sidecar's own chain (`sidecar-<instance>`) holding one `control.applied` event per control message it applied,
 * as the sidecar records an approver's terminate, suspend or resume.
 */
export function makeControlApplied(
  instance: string,
  controls: readonly AuditControl[],
  startMs = Date.UTC(2026, 10, 30, 14),
): AuditEvent[] {
  const chain = newChain();
  let t = startMs * 1000;
  return controls.map((control) => {
    const e = sealEvent(
      {
        v: 1,
        type: 'control.applied',
        time: formatAuditTime(t),
        session: { id: `sidecar-${instance}` },
        source: { instance },
        identity: { namespace: 'agents', groups: [] },
        policy: { name: 'analytics-agent', hash: 'sha256:0000' },
        control,
      },
      chain,
    );
    t += 1000;
    return e;
  });
}

/** What a sidecar's `audit.gap` declares (docs/audit.md): an fsync failure's ranges unless `cause` says otherwise. */
export interface GapDeclaration {
  /** The declaring sidecar's instance id: a restart gets a new one, and a new chain `sidecar-<instance>`. */
  instance: string;
  /** The sidecar's pod (downward API), which a restart of its container keeps. */
  pod?: string;
  namespace?: string;
  sessions: { id: string; fromSeq: number; toSeq: number }[];
  truncated?: boolean;
  dropped?: number;
  cause?: string;
  since?: string;
  until?: string;
}

/**
 * The first event of a sidecar's own chain: its `audit.gap`, in the shape of sidecar/src/audit/audit-recorder.ts (a
 * sidecar started on an at-risk record declares it first thing).
 */
export function makeGapDeclaration(g: GapDeclaration): AuditEvent {
  const since = g.since ?? '2026-11-30T12:39:00.000000Z';
  return sealEvent(
    {
      v: 1,
      type: 'audit.gap',
      time: '2026-11-30T12:40:00.000000Z',
      session: { id: `sidecar-${g.instance}` },
      source: { instance: g.instance, ...(g.pod ? { pod: g.pod, namespace: g.namespace ?? 'agents' } : {}) },
      identity: { namespace: g.namespace ?? 'agents', groups: [], ...(g.pod ? { pod: g.pod } : {}) },
      policy: { name: 'analytics-agent', hash: 'sha256:0000' },
      gap: {
        dropped: g.dropped ?? g.sessions.reduce((n, r) => n + r.toSeq - r.fromSeq + 1, 0),
        since,
        until: g.until ?? '2026-11-30T12:40:00.000000Z',
        cause: g.cause ?? 'fsync_failed',
        sessions: g.sessions,
        ...(g.truncated ? { truncated: true } : {}),
      },
    },
    newChain(),
  );
}
