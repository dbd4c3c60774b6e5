/**
 * Turns an audit event (docs: DESIGN §5; the sidecar's first cut fills a subset) into one readable line for the
 * demo's terminal. Unknown or missing fields are skipped, never guessed.
 */
type Event = Record<string, any>;

const MAX_SQL = 100;

export function formatAuditEvent(e: Event): string {
  const time = typeof e.time === 'string' ? e.time.slice(11, 23) : new Date().toISOString().slice(11, 23);
  const session = e.session?.id ? `s:${String(e.session.id).slice(0, 8)}` : '';
  const seq = e.session?.seq !== undefined ? `#${e.session.seq}` : '';
  const type = String(e.type ?? 'event');
  const head = [time, session.padEnd(10), seq.padStart(4)].join(' ');
  if (type === 'audit.heads' && Array.isArray(e.heads?.chains)) {
    // The sidecar's record of how far each session chain reached (docs/audit.md#chain-heads), kept to one line.
    const chains = e.heads.chains.map((c: Event) => `s:${String(c.id).slice(0, 8)}#${c.seq}`);
    return `${head}  audit.heads ${chains.slice(0, 4).join(' ')}${chains.length > 4 ? ` +${chains.length - 4}` : ''}`;
  }
  if (type !== 'statement') {
    const who = e.database?.user ? ` ${e.database.user}@${e.database.name ?? ''}` : '';
    const why = e.reason ?? e.decision?.reason;
    return `${head}  ${type}${who}${why ? ` (${why})` : ''}`;
  }
  const action = e.decision?.action ? String(e.decision.action) : '';
  const error = e.result?.error?.code ? `ERROR ${e.result.error.code}` : '';
  const verdict = (
    action === 'deny' ? `DENIED${e.decision?.rule ? ` by ${e.decision.rule}` : ''}` : error || 'ok'
  ).padEnd(11);
  const tag = e.result?.tag ? String(e.result.tag) : '';
  // A tag with a count says it already; SET, BEGIN or DISCARD ALL return no rows, and `rows=0` there is noise.
  const rows =
    typeof e.result?.rows === 'number' && e.result.rows > 0 && !error && !/\d/.test(tag)
      ? ` rows=${e.result.rows}`
      : '';
  const ms = typeof e.timing?.durationMs === 'number' ? `${e.timing.durationMs.toFixed(1)} ms` : '';
  const masked = e.masking?.cells ? ` masked=${e.masking.cells}` : '';
  // A statement held for review: how long, and who let it run (a person, or a grant: the decision's reason).
  const heldMs = typeof e.timing?.heldMs === 'number' ? e.timing.heldMs : 0;
  const reason = typeof e.decision?.reason === 'string' ? e.decision.reason : '';
  const approval = /^approved by /.test(reason) ? ` (${reason})` : '';
  const held = heldMs >= 1 || approval ? ` held=${(heldMs / 1000).toFixed(1)}s${approval}` : '';
  const text = oneLine(String(e.statement?.text ?? e.sql ?? ''));
  return `${head}  ${verdict} ${(tag + rows).padEnd(14)} ${ms.padStart(9)}${masked}${held}  ${text}`;
}

function oneLine(sql: string): string {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > MAX_SQL ? `${flat.slice(0, MAX_SQL - 1)}…` : flat;
}
