import type { ApprovalEntry } from '@pgwarden/collector';
import {
  boundValuesText,
  lookAlikes,
  nonAsciiCharacters,
  terminalSafeJson,
  visibleText,
} from '@pgwarden/collector/client';
import type { Command } from 'commander';
import { type ApproverOptions, approverAction, callCollector, withApproverOptions } from './collector-client.js';
import { publicKeyPem, writePrivateKey } from './ed25519-keygen.js';
import { textTable } from './text-table.js';

/** "in 4m", "2h ago": how far `iso` is from `now`. */
export function relativeTime(iso: string, now: number): string {
  const ms = Date.parse(iso) - now;
  const abs = Math.abs(ms);
  const span =
    abs < 60_000
      ? `${Math.round(abs / 1000)}s`
      : abs < 3_600_000
        ? `${Math.round(abs / 60_000)}m`
        : abs < 86_400_000
          ? `${Math.round(abs / 3_600_000)}h`
          : `${Math.round(abs / 86_400_000)}d`;
  return ms >= 0 ? `in ${span}` : `${span} ago`;
}

function who(identity: Record<string, unknown>): string {
  const s = (k: string) => (typeof identity[k] === 'string' ? visibleText(identity[k] as string) : undefined);
  if (s('user')) return s('user') as string;
  if (s('serviceAccount')) return `${s('namespace') ?? '-'}/${s('serviceAccount')}`;
  return '-';
}

// Every text a request carries reaches the terminal through visibleText: an escape sequence or a carriage return in
// the agent's SQL would otherwise rewrite what the approver reads (conceal `OR true`, write over a line).
const oneLine = (sql: string, max: number) => {
  const t = visibleText(sql)
    .replace(/[ \t\n]+/g, ' ')
    .trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

/** Every text of a request the agent chose or influenced: statement, values, who asked, policy, rule, session. */
function requestTexts(r: ApprovalEntry['request']): string[] {
  const id = r.identity as Record<string, unknown>;
  return [
    r.sql,
    ...(r.params ?? []),
    ...['user', 'namespace', 'serviceAccount', 'pod'].map((k) => id[k]),
    r.policy.namespace,
    r.policy.name,
    r.rule,
    r.session,
  ].filter((t): t is string => typeof t === 'string');
}

/** Words of the request that pass for others (a Cyrillic а in `аlice`): flagged on their own lines by `show`. */
const requestLookAlikes = (r: ApprovalEntry['request']) => lookAlikes(requestTexts(r).join(' '));

const policyRef = (r: ApprovalEntry['request']) =>
  visibleText(`${r.policy.namespace ? `${r.policy.namespace}/` : ''}${r.policy.name}${r.rule ? `#${r.rule}` : ''}`);

/** One row per entry, columns padded; the SQL is folded onto one line and cut. */
export function formatApprovalTable(entries: readonly ApprovalEntry[], now: number): string {
  const rows = entries.map((e) => [
    e.id,
    e.state,
    relativeTime(e.request.requestedAt, now),
    relativeTime(e.request.expiresAt, now),
    who(e.request.identity),
    policyRef(e.request),
    // A request with look-alike words says so before its SQL: `show` names them.
    (requestLookAlikes(e.request).length > 0 ? '⚠ look-alike: ' : '') + oneLine(e.request.sql, 60),
  ]);
  return textTable(['ID', 'STATE', 'REQUESTED', 'EXPIRES', 'WHO', 'POLICY', 'SQL'], rows);
}

const subjectsText = (s: Record<string, unknown>) =>
  (['users', 'groups', 'serviceAccounts'] as const)
    .filter((k) => Array.isArray(s[k]) && (s[k] as unknown[]).length > 0)
    .map((k) => `${k} ${visibleText((s[k] as string[]).join(', '))}`)
    .join('; ') || '(nobody)';

/** Everything about one entry, the SQL in full. */
export function formatApproval(e: ApprovalEntry, now: number): string {
  const r = e.request;
  const lines = [
    `id         ${e.id}`,
    `state      ${e.state}`,
    `policy     ${visibleText(`${r.policy.namespace ? `${r.policy.namespace}/` : ''}${r.policy.name}${r.rule ? ` (rule "${r.rule}")` : ' (defaultAction)'}`)}`,
    `requested  ${r.requestedAt} (${relativeTime(r.requestedAt, now)}) by ${who(r.identity)}, session ${visibleText(r.session)}`,
    `expires    ${r.expiresAt} (${relativeTime(r.expiresAt, now)})`,
    `approvers  ${subjectsText(r.approvers as Record<string, unknown>)}`,
  ];
  if (e.decision) {
    const d = e.decision;
    lines.push(visibleText(`decision   ${d.decision} by ${d.by.name} at ${d.at}${d.reason ? `: ${d.reason}` : ''}`));
  }
  if (e.closed)
    lines.push(
      visibleText(
        `closed     ${e.closed.outcome} at ${e.closed.at}${e.closed.by ? ` (${e.closed.by.name})` : ''}${e.closed.reason ? `: ${e.closed.reason}` : ''}`,
      ),
    );
  // An approval the sidecar could not apply gave no grant either, whatever the approver asked for.
  if (e.grant && e.state === 'denied')
    lines.push(`grant      asked for ${visibleText(e.grant.for)}, none given: the sidecar denied the statement`);
  else if (e.grant) lines.push(`grant      ${visibleText(grantText(e.grant, now))}`);
  else if (r.grantMax) lines.push(`grantable  up to ${r.grantMax} (approve --for DURATION)`);
  lines.push(
    'sql',
    ...visibleText(r.sql)
      .split('\n')
      .map((l) => `  ${l}`),
  );
  // A prepared statement's execution: the values it runs with, which the approval is for, each marked text or binary.
  if (r.params) lines.push('values', ...boundValuesText(r.params, r.paramFormats).map((l) => `  ${visibleText(l)}`));
  // Letters that look like ASCII ones may not be (a Cyrillic а in a name or a literal): the approver is told.
  const foreign = nonAsciiCharacters([r.sql, ...(r.params ?? [])].join(' '));
  if (foreign.length > 0) lines.push(`not ASCII  ${foreign.join(', ')}`);
  // Which words pass for others, in the statement and in who and what asked: not what they look like.
  for (const [i, word] of requestLookAlikes(r).entries())
    lines.push(`${i === 0 ? '⚠ look-alike' : '            '} ${visibleText(word)}`);
  return `${lines.join('\n')}\n`;
}

/** "active, until … (in 28m)", "revoked by bob: …", "requested for 30m": where an approval's grant stands. */
export function grantText(g: NonNullable<ApprovalEntry['grant']>, now: number): string {
  const until = g.until ? ` until ${g.until} (${relativeTime(g.until, now)})` : '';
  if (g.state === 'revoked' && g.revoked)
    return `revoked by ${g.revoked.by.name} at ${g.revoked.at}${g.revoked.reason ? `: ${g.revoked.reason}` : ''}`;
  if (g.state === 'requested') return `requested for ${g.for}; the sidecar has not applied the approval yet`;
  if (g.state === 'refused') return `asked for ${g.for}, but the sidecar's policy allows none: this statement only`;
  return `${g.state}${until}, asked for ${g.for}`;
}

/** Active grants: which approvals cover later statements of their shape, and until when. */
export function formatGrantTable(entries: readonly ApprovalEntry[], now: number): string {
  const rows = entries.map((e) => [
    e.id,
    e.grant?.until ? relativeTime(e.grant.until, now) : '-',
    e.decision?.by.name ?? '-',
    who(e.request.identity),
    policyRef(e.request),
    oneLine(e.request.sql, 60),
  ]);
  return textTable(['ID', 'ENDS', 'BY', 'WHO', 'POLICY', 'SQL'], rows);
}

const decisionWaiting = (e: ApprovalEntry) =>
  e.state === 'decided' ? 'published; the sidecar applies it when it receives it' : `now ${e.state}`;

const printEntry = (o: ApproverOptions, e: ApprovalEntry) =>
  o.json ? `${terminalSafeJson(e, 2)}\n` : formatApproval(e, Date.now());

/** `pgwarden approvals list|show|approve|reject`: the collector's approval queue, for the people who decide. */
export function registerApprovals(program: Command): void {
  const approvals = program
    .command('approvals')
    .description(
      'list, show, approve or reject statements held by `review` rules (via a collector; exit 1 when it refuses, 2 when it cannot be asked); keygen makes the collector’s decision signing key',
    );
  withApproverOptions(approvals.command('list').description('held statements, newest first'))
    .option(
      '--state <state>',
      'pending, decided, approved, rejected, denied, expired, withdrawn, refused, a comma-separated list of these, or all',
      'pending',
    )
    .option('--limit <n>', 'only the newest n (1–1000)')
    .action(
      approverAction('approvals list', async (o, target) => {
        const q = new URLSearchParams({ state: String(o.state) });
        if (o.limit !== undefined) q.set('limit', String(o.limit));
        const { approvals: entries } = (await callCollector(target, 'GET', `/api/v1/approvals?${q}`)) as {
          approvals: ApprovalEntry[];
        };
        if (o.json) return `${terminalSafeJson(entries, 2)}\n`;
        return entries.length === 0
          ? `no ${o.state === 'all' ? '' : `${o.state} `}approvals\n`
          : formatApprovalTable(entries, Date.now());
      }),
    );

  withApproverOptions(
    approvals.command('show').argument('<id>').description('one request in full: SQL, who asked, who may decide'),
  ).action(
    approverAction('approvals show', async (o, target) =>
      printEntry(
        o,
        (await callCollector(target, 'GET', `/api/v1/approvals/${encodeURIComponent(String(o.arg))}`)) as ApprovalEntry,
      ),
    ),
  );

  for (const decision of ['approve', 'reject'] as const) {
    const cmd = withApproverOptions(
      approvals
        .command(decision)
        .argument('<id>')
        .description(`${decision} a pending statement (you must be one of its approvers, and not the one who asked)`),
    ).option('--reason <text>', 'why (kept in the stream and shown to others; at most 1024 characters)');
    if (decision === 'approve')
      cmd.option(
        '--for <duration>',
        "also approve later statements of the same shape (same rule, identity, tables and functions) from the same pod for this long, e.g. 30m; at most the policy's approval.grants.maxDuration",
      );
    cmd.action(
      approverAction(`approvals ${decision}`, async (o, target) => {
        const e = (await callCollector(target, 'POST', `/api/v1/approvals/${encodeURIComponent(String(o.arg))}`, {
          decision,
          ...(o.reason ? { reason: o.reason } : {}),
          ...(o.for ? { grantFor: o.for } : {}),
        })) as ApprovalEntry;
        if (o.json) return `${terminalSafeJson(e, 2)}\n`;
        const grant = e.decision?.grant ? ` (a grant for ${e.decision.grant.for} was asked for)` : '';
        return `${e.decision?.decision ?? decision} ${e.id} as ${e.decision?.by.name ?? '?'}${grant}: ${decisionWaiting(e)}\n`;
      }),
    );
  }

  withApproverOptions(
    approvals
      .command('grants')
      .description('active grants: approvals that still cover later statements, and until when'),
  ).action(
    approverAction('approvals grants', async (o, target) => {
      const { approvals: entries } = (await callCollector(target, 'GET', '/api/v1/approvals?grants=active')) as {
        approvals: ApprovalEntry[];
      };
      if (o.json) return `${terminalSafeJson(entries, 2)}\n`;
      return entries.length === 0 ? 'no active grants\n' : formatGrantTable(entries, Date.now());
    }),
  );

  withApproverOptions(
    approvals
      .command('revoke')
      .argument('<id>')
      .description("end an approval's grant now: later statements of its shape are held for review again"),
  )
    .option('--reason <text>', 'why (kept in the stream; at most 1024 characters)')
    .action(
      approverAction('approvals revoke', async (o, target) => {
        const e = (await callCollector(
          target,
          'POST',
          `/api/v1/approvals/${encodeURIComponent(String(o.arg))}/revoke`,
          o.reason ? { reason: o.reason } : {},
        )) as ApprovalEntry;
        if (o.json) return `${terminalSafeJson(e, 2)}\n`;
        return `revoked the grant of ${e.id}: published; the sidecar ends it when it receives it\n`;
      }),
    );

  approvals
    .command('keygen')
    .description(
      "make the collector's decision signing key: writes the Ed25519 private key (PEM, mode 0600) for " +
        "`pgwarden collector --approvals-signing-key` and prints the public key for policies' approval.decisionKeys",
    )
    .requiredOption('--out <file>', 'where to write the private key (refuses to overwrite)')
    .action((o: { out: string }) => {
      process.stdout.write(publicKeyPem(writePrivateKey(o.out, 'approvals keygen')));
    });
}
