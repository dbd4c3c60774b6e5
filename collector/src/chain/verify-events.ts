import type { AuditEvent } from '../event.js';
import { type AuditKeyring, NO_KEYS } from '../signatures/audit-keys.js';
import { namespaceOf, unsignedFinding } from '../signatures/checkpoint-judgement.js';
import { type CommittedHead, headFindings, headsOf } from './chain-heads.js';
import { schemaV1Rules } from './chain-rules.js';
import { type ChainFinding, type FullReport, verifySession } from './verify-chain.js';

/**
 * Verifies a set of events held in memory (a sidecar's `--audit file:` trail, a jsonl export, events from a SIEM)
 * with the same rules a collector applies to its store: every chain re-hashed and linked, every checkpoint judged
 * against `keyring`, and with `requireSigned` every ended session held to being signed to its end. Nothing was
 * recorded at ingest here: a session's tail cut after the last event given is found through the heads its
 * sidecar's own chain recorded (`audit.heads`, when that chain is among the events), a missing `session.end` or,
 * when required, a missing signature.
 */
export function verifyEvents(
  events: readonly AuditEvent[],
  opts: { keyring?: AuditKeyring; requireSigned?: boolean; sessions?: readonly string[] } = {},
): FullReport[] {
  const keyring = opts.keyring ?? NO_KEYS;
  const bySession = new Map<string, AuditEvent[]>();
  const heads = new Map<string, CommittedHead[]>();
  const wanted = (sid: string) => !opts.sessions || opts.sessions.includes(sid);
  for (const e of events) {
    for (const { sessionId, head } of headsOf(e)) {
      if (!wanted(sessionId)) continue;
      const list = heads.get(sessionId);
      if (list) list.push(head);
      else heads.set(sessionId, [head]);
      // A chain named only by heads was deleted whole: it gets a report of its own.
      if (!bySession.has(sessionId)) bySession.set(sessionId, []);
    }
    const sid = e.session.id;
    if (!wanted(sid)) continue;
    const list = bySession.get(sid);
    if (list) list.push(e);
    else bySession.set(sid, [e]);
  }
  const reports: FullReport[] = [];
  for (const [sid, list] of bySession) {
    const report = verifySession(sid, list, schemaV1Rules, undefined, keyring);
    report.findings.push(...headFindings(sid, list, heads.get(sid) ?? []));
    report.ok = report.findings.length === 0;
    if (opts.requireSigned) {
      const f = requiredSignatureFinding(report, list, keyring);
      if (f) report.findings.push(f);
      report.ok = report.findings.length === 0;
    }
    reports.push(report);
  }
  return reports;
}

/** `--require-signed-audit` applied to one session's full report (unsignedFinding), as the store and files do. */
export function requiredSignatureFinding(
  report: FullReport,
  events: readonly AuditEvent[],
  keyring: AuditKeyring,
  firstSeq = schemaV1Rules.firstSeq,
): ChainFinding | undefined {
  return unsignedFinding(
    {
      sessionId: report.sessionId,
      namespace: events.map(namespaceOf).find((ns) => ns !== null) ?? null,
      ended: report.ended,
      firstSeq: report.firstSeq ?? firstSeq,
      lastSeq: report.lastSeq ?? firstSeq,
      signature: report.signature,
    },
    keyring,
  );
}
