/**
 * NATS subject and message id of an audit event. Subject tokens may not hold `.`, `*`, `>` or whitespace
 * (https://docs.nats.io/nats-concepts/subjects#characters-allowed-and-recommended-for-subject-names);
 * Kubernetes policy names may hold dots, so those become `_`.
 */
export const AUDIT_STREAM = 'PGWARDEN_AUDIT';
export const AUDIT_SUBJECT_PREFIX = 'pgwarden.audit';

export function subjectToken(s: string | undefined): string {
  if (!s) return '_';
  return s.replace(/[.*>\s\u0000-\u001f\u007f]/g, '_');
}

export function auditSubject(event: { identity?: { namespace?: string }; policy?: { name?: string } }): string {
  return `${AUDIT_SUBJECT_PREFIX}.${subjectToken(event.identity?.namespace)}.${subjectToken(event.policy?.name)}`;
}
