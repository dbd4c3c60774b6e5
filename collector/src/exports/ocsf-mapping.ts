import type { AuditEvent } from '../event.js';

/**
 * Maps an audit event to OCSF 1.1.0 Datastore Activity (class_uid 6005, category 6 "Application Activity";
 * https://schema.ocsf.io/1.1.0/classes/datastore_activity). Pure; the mapping table is in docs/collector.md.
 */
export const OCSF_VERSION = '1.1.0';
const CLASS_UID = 6005;

const ACTIVITY: Record<string, [number, string]> = {
  select: [4, 'Query'],
  insert: [6, 'Create'],
  copy: [5, 'Write'],
  merge: [5, 'Write'],
  update: [2, 'Update'],
  delete: [7, 'Delete'],
};

function activityOf(e: AuditEvent): [number, string] {
  if (e.type === 'session.start') return [3, 'Connect'];
  // audit.read (the collector's own chain): someone read the audit store itself.
  if (e.type === 'audit.read') return [1, 'Read'];
  // control.applied: no Datastore Activity names an approver ending a session or suspending a policy.
  if (e.type === 'statement') return ACTIVITY[e.statement?.kind ?? ''] ?? [99, e.statement?.kind ?? 'Other'];
  return [99, e.type];
}

/** OCSF severity: 1 Informational, 3 Medium (denied/held), 4 High (events missing), 5 Critical (events altered). */
function severityOf(e: AuditEvent): number {
  if (e.type === 'audit.finding') return findingOf(e)?.kind === 'audit.tampered' ? 5 : 4;
  // Someone cut an agent off, as a denial does; a resume lets it back in.
  const control = controlOf(e);
  if (control) return control.kind === 'resume' ? 1 : 3;
  const a = e.decision?.action;
  if (a === 'deny') return 3;
  if (a === 'review') return 2;
  return 1;
}

/** The chain finding an `audit.finding` event (the collector's own chain) carries. */
export function findingOf(e: AuditEvent): { kind?: string; session?: string; detail?: string } | undefined {
  return e.type === 'audit.finding' ? (e.finding as { kind?: string; session?: string; detail?: string }) : undefined;
}

/** The action a `control.applied` event (a sidecar's own chain) records: who ended or suspended what, and why. */
export function controlOf(e: AuditEvent): { kind?: string; by?: string; reason?: string } | undefined {
  return e.type === 'control.applied' ? (e.control as { kind?: string; by?: string; reason?: string }) : undefined;
}

/** The web UI sign-in a `web.session.end` event (the collector's own chain) says ended: whose, and why. */
export function webSessionOf(e: AuditEvent): { reader?: string; reason?: string; detail?: string } | undefined {
  return e.type === 'web.session.end'
    ? (e.webSession as { reader?: string; reason?: string; detail?: string } | undefined)
    : undefined;
}

export function toOcsf(e: AuditEvent): Record<string, unknown> {
  const [activityId, activityName] = activityOf(e);
  const denied = e.decision?.action === 'deny';
  const error = (e.result as { error?: { code?: string; message?: string } } | undefined)?.error;
  const db = e.database as { host?: string; port?: number; name?: string; user?: string; role?: string } | undefined;
  const client = e.client as { address?: string; port?: number; application?: string } | undefined;
  const read = e.type === 'audit.read' ? (e.read as { reader?: string; status?: number }) : undefined;
  const finding = findingOf(e);
  const failed =
    finding !== undefined || (read?.status !== undefined ? read.status >= 400 : denied || error !== undefined);
  const control = controlOf(e);
  const web = webSessionOf(e);
  const user = read?.reader ?? control?.by ?? web?.reader ?? e.identity?.user;
  return {
    class_uid: CLASS_UID,
    class_name: 'Datastore Activity',
    category_uid: 6,
    category_name: 'Application Activity',
    activity_id: activityId,
    activity_name: activityName,
    type_uid: CLASS_UID * 100 + activityId,
    time: Math.floor(Date.parse(e.time)),
    severity_id: severityOf(e),
    status_id: failed ? 2 : 1,
    status: failed ? 'Failure' : 'Success',
    ...(error ? { status_code: error.code, status_detail: error.message } : {}),
    ...(read?.status !== undefined ? { status_code: String(read.status) } : {}),
    // audit.finding: the trail itself is incomplete or altered; the detail names the session and what is wrong.
    ...(finding ? { status_code: finding.kind, status_detail: `session ${finding.session}: ${finding.detail}` } : {}),
    // web.session.end: no Datastore Activity names a sign-in ending; activity 99 with why in the status fields.
    ...(web ? { status_code: web.reason, status_detail: web.detail } : {}),
    // disposition_id: 1 Allowed, 2 Blocked, 17 Logged (dryrun), 99 Other (held for review).
    ...(e.decision
      ? { disposition_id: denied ? 2 : e.decision.action === 'allow' ? 1 : e.decision.action === 'dryrun' ? 17 : 99 }
      : {}),
    message: control ? `${control.kind} by ${control.by}: ${control.reason}` : (e.decision?.reason ?? e.type),
    metadata: {
      version: OCSF_VERSION,
      uid: e.id,
      original_time: e.time,
      product: { name: 'pgwarden', vendor_name: 'pgwarden' },
      log_name: 'pgwarden.audit',
      correlation_uid: e.session.id,
      sequence: e.session.seq,
    },
    actor: {
      user: {
        name: typeof user === 'string' ? user : e.identity?.serviceAccount,
        uid: typeof user === 'string' ? user : undefined,
        groups: e.identity?.groups?.map((g) => ({ name: g })),
      },
      session: { uid: e.session.id },
      ...(e.identity?.pod ? { process: { name: e.identity.pod } } : {}),
    },
    ...(client ? { src_endpoint: { ip: client.address, port: client.port } } : {}),
    ...(db ? { dst_endpoint: { hostname: db.host, port: db.port } } : {}),
    database: db ? { name: db.name, type: 'PostgreSQL', type_id: 99 } : undefined,
    ...(e.statement ? { query_info: { query_string: e.statement.text, uid: e.statement.fingerprint } } : {}),
    unmapped: {
      namespace: e.identity?.namespace,
      policy: e.policy,
      rule: e.decision?.rule,
      tables: e.statement?.tables,
      db_user: db?.user,
      db_role: db?.role,
      rows: (e.result as { rows?: number } | undefined)?.rows,
      rows_changed: (e.result as { changed?: number } | undefined)?.changed,
      hash: e.hash,
      prev_hash: e.prevHash,
      // audit.checkpoint: the signed position (seq, hash, key id, signature), so the SIEM keeps the evidence.
      checkpoint: e.checkpoint,
      // audit.read: who read which route of the trail, with what query, scope, answer and item count (and an action's reason).
      read: e.read,
      // audit.heads: the session chains' positions the sidecar recorded, so a SIEM copy can find cut tails too.
      heads: e.heads,
      finding: e.finding,
      // control.applied: the action (kind, id, by, reason, target, signed, sessionsEnded) as the sidecar applied it.
      control: e.control,
    },
  };
}
