import type { AuditEvent } from '../event.js';
import { controlOf, findingOf, webSessionOf } from './ocsf-mapping.js';

/**
 * ECS event.category and event.type (allowed values: https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-category.html,
 * https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-type.html).
 */
function ecsCategorization(e: AuditEvent): { category: string[]; type: string[] } {
  // control.applied: an approver ended a session, or changed whether a policy lets anyone in.
  const control = controlOf(e);
  if (control)
    return control.kind === 'terminate'
      ? { category: ['session'], type: ['end'] }
      : { category: ['configuration'], type: ['change'] };
  // web.session.end: a person's sign-in to the web UI ended.
  if (e.type === 'web.session.end') return { category: ['session'], type: ['end'] };
  return { category: [e.type === 'audit.read' ? 'web' : 'database'], type: [ecsType(e.type)] };
}

function ecsType(type: string): string {
  if (type === 'session.start') return 'start';
  if (type === 'session.end') return 'end';
  // A signed checkpoint or a chain-heads record says nothing done to the database: it vouches for other events.
  if (type === 'audit.checkpoint' || type === 'audit.heads' || type === 'audit.finding') return 'info';
  return 'access';
}

/**
 * Elastic Common Schema document for an audit event (https://www.elastic.co/guide/en/ecs/current/ecs-field-reference.html).
 * ECS has no database field set, so database facts go under `db.*` (custom, outside ECS's reserved names) and the
 * pgwarden-specific keys under `labels` (keyword values only, as ECS requires) and `pgwarden.*`.
 */
export function toEcs(e: AuditEvent): Record<string, unknown> {
  const action = e.decision?.action;
  const error = (e.result as { error?: { code?: string; message?: string } } | undefined)?.error;
  // audit.read: a read of the trail over the collector's API; who read it is the user, the answer its outcome.
  const read =
    e.type === 'audit.read'
      ? (e.read as { reader?: string; route?: string; status?: number; reason?: string })
      : undefined;
  // audit.finding: an alert that the trail is incomplete (gap) or altered (tampered), not an access.
  const finding = findingOf(e);
  const control = controlOf(e);
  const web = webSessionOf(e);
  const outcome = finding
    ? 'failure'
    : read?.status !== undefined
      ? read.status < 400
        ? 'success'
        : 'failure'
      : action === 'deny' || error
        ? 'failure'
        : e.type === 'statement' || control || web
          ? 'success'
          : 'unknown';
  const db = e.database as { host?: string; port?: number; name?: string; user?: string; role?: string } | undefined;
  const client = e.client as { address?: string; port?: number } | undefined;
  const timing = e.timing as { durationMs?: number } | undefined;
  const user = e.identity?.user;
  return {
    '@timestamp': e.time,
    ecs: { version: '8.11.0' },
    event: {
      id: e.id,
      kind: finding ? 'alert' : 'event',
      // Elastic Security's risk scale (high 73, critical 99): events missing, events altered.
      ...(finding ? { severity: finding.kind === 'audit.tampered' ? 99 : 73, reason: finding.detail } : {}),
      ...ecsCategorization(e),
      action:
        e.type === 'statement'
          ? `statement-${e.statement?.kind ?? 'unknown'}`
          : control
            ? `control-${control.kind}`
            : e.type,
      outcome,
      ...(timing?.durationMs !== undefined ? { duration: Math.round(timing.durationMs * 1e6) } : {}),
      ...(finding ? {} : { reason: control?.reason ?? read?.reason ?? web?.detail ?? e.decision?.reason }),
      sequence: e.session.seq,
      hash: e.hash,
    },
    user: {
      name:
        read?.reader ?? control?.by ?? web?.reader ?? (typeof user === 'string' ? user : e.identity?.serviceAccount),
      roles: e.identity?.groups,
    },
    ...(read ? { url: { path: read.route }, http: { response: { status_code: read.status } } } : {}),
    ...(client ? { source: { ip: client.address, port: client.port } } : {}),
    ...(db ? { destination: { address: db.host, port: db.port } } : {}),
    orchestrator: e.identity?.namespace
      ? { namespace: e.identity.namespace, resource: { name: e.identity.pod, type: 'pod' } }
      : undefined,
    rule: e.decision?.rule ? { name: e.decision.rule } : undefined,
    error: error ? { code: error.code, message: error.message } : undefined,
    db: db
      ? {
          system: 'postgresql',
          name: db.name,
          user: db.user,
          role: db.role,
          statement: e.statement?.text,
          operation: e.statement?.kind,
          sql: { table: e.statement?.tables },
          rows: (e.result as { rows?: number } | undefined)?.rows,
          // guardrails.maxRowsAffected: what the statement changed in all, its triggers and cascades included.
          rows_changed: (e.result as { changed?: number } | undefined)?.changed,
        }
      : undefined,
    labels: {
      session_id: e.session.id,
      policy: e.policy?.name,
      decision: action,
      namespace: e.identity?.namespace,
    },
    pgwarden: {
      session: e.session,
      prev_hash: e.prevHash ?? null,
      masking: e.masking,
      checkpoint: e.checkpoint,
      read: e.read,
      heads: e.heads,
      finding: e.finding,
      control: e.control,
    },
  };
}
