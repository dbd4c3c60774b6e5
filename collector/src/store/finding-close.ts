import { CLOSURE_COLUMNS, type ClosureColumns, closureOf, FINDING_ROW_SELECT, type FindingRow } from './queries.js';
import type { SqlClient } from './sql-client.js';

/** Who closes a finding: the approvers entry's name, and the OIDC issuer and `sub` when they came with a token of it. */
export interface Closer {
  name: string;
  oidc?: { issuer: string; subject: string };
}

/**
 * How a close ended: the finding as it is now, or why it was not closed. `not_found` covers a finding outside the
 * closer's namespaces too, so that a scoped approver learns nothing of others'. `resolved`: its events arrived, so
 * there is nothing left to close.
 */
export type CloseOutcome =
  | { closed: FindingRow }
  | { refused: 'not_found' }
  | { refused: 'already_closed' | 'resolved'; finding: FindingRow };

/**
 * Closes finding `id` by hand, once: an open finding (`audit.gap.unattributed` above all, which no chain can settle)
 * that someone has looked into. `visible` says whether the closer may act on a finding of that namespace. In one
 * transaction, the row locked, so two closes of one finding (two replicas, two people) close it once.
 */
export async function closeFinding(
  db: SqlClient,
  id: number,
  by: Closer,
  reason: string,
  visible: (namespace: string | null) => boolean,
): Promise<CloseOutcome> {
  return db.transaction(async (tx) => {
    const [row] = await tx.query<ClosureColumns & Omit<FindingRow, 'closed'>>(
      `${FINDING_ROW_SELECT} WHERE f.id = $1 FOR UPDATE OF f`,
      [id],
    );
    if (!row) return { refused: 'not_found' };
    const finding: FindingRow = closureOf(row);
    if (!visible(finding.namespace)) return { refused: 'not_found' };
    if (finding.closed) return { refused: 'already_closed', finding };
    if (finding.resolvedAt !== null) return { refused: 'resolved', finding };
    const [closed] = await tx.query<ClosureColumns>(
      `UPDATE audit_chain_findings f SET closed_at = now(), closed_by = $2, closed_reason = $3,
         closed_oidc_issuer = $4, closed_oidc_subject = $5
       WHERE f.id = $1 RETURNING ${CLOSURE_COLUMNS}`,
      [id, by.name, reason, by.oidc?.issuer ?? null, by.oidc?.subject ?? null],
    );
    return { closed: { ...finding, closed: closureOf(closed).closed } };
  });
}
