import type { ApprovalEntry } from '@pgwarden/collector';
import type { Command } from 'commander';
import { bearerToken, withCollectorOption } from './collector-client.js';
import { publicKeyPem, writePrivateKey } from './ed25519-keygen.js';

/** Exit status 1: the collector answered and refused (or found nothing). 2: the command could not run at all. */
class ApprovalsCliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

interface Target {
  collector: string;
  token: string;
}

/** The approver token (`--token-file` or env PGWARDEN_APPROVER_TOKEN); without one the command cannot run. */
function tokenOf(tokenFile: string | undefined): string {
  let t: string | undefined;
  try {
    t = bearerToken(tokenFile, 'PGWARDEN_APPROVER_TOKEN');
  } catch (err) {
    throw new ApprovalsCliError((err as Error).message, 2);
  }
  if (!t) throw new ApprovalsCliError('no approver token: set PGWARDEN_APPROVER_TOKEN or give --token-file', 2);
  return t;
}

async function call(target: Target, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
  let r: Response;
  try {
    r = await fetch(new URL(path, target.collector), {
      method,
      headers: {
        authorization: `Bearer ${target.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new ApprovalsCliError(
      `cannot reach the collector at ${target.collector}: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
      2,
    );
  }
  const text = await r.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ApprovalsCliError(`the collector answered ${r.status} with something other than JSON`, 2);
  }
  if (!r.ok) {
    const e = (parsed as { error?: { code?: string; message?: string } }).error;
    throw new ApprovalsCliError(`collector answered ${r.status} ${e?.code ?? ''}: ${e?.message ?? text}`, 1);
  }
  return parsed;
}

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
  const s = (k: string) => (typeof identity[k] === 'string' ? (identity[k] as string) : undefined);
  if (s('user')) return s('user') as string;
  if (s('serviceAccount')) return `${s('namespace') ?? '-'}/${s('serviceAccount')}`;
  return '-';
}

const oneLine = (sql: string, max: number) => {
  const t = sql.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

/** One row per entry, columns padded; the SQL is folded onto one line and cut. */
export function formatApprovalTable(entries: readonly ApprovalEntry[], now: number): string {
  const rows = entries.map((e) => [
    e.id,
    e.state,
    relativeTime(e.request.requestedAt, now),
    relativeTime(e.request.expiresAt, now),
    who(e.request.identity),
    `${e.request.policy.namespace ? `${e.request.policy.namespace}/` : ''}${e.request.policy.name}${e.request.rule ? `#${e.request.rule}` : ''}`,
    oneLine(e.request.sql, 60),
  ]);
  const head = ['ID', 'STATE', 'REQUESTED', 'EXPIRES', 'WHO', 'POLICY', 'SQL'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows]
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '))
    .join('\n')
    .concat('\n');
}

const subjectsText = (s: Record<string, unknown>) =>
  (['users', 'groups', 'serviceAccounts'] as const)
    .filter((k) => Array.isArray(s[k]) && (s[k] as unknown[]).length > 0)
    .map((k) => `${k} ${(s[k] as string[]).join(', ')}`)
    .join('; ') || '(nobody)';

/** Everything about one entry, the SQL in full. */
export function formatApproval(e: ApprovalEntry, now: number): string {
  const r = e.request;
  const lines = [
    `id         ${e.id}`,
    `state      ${e.state}`,
    `policy     ${r.policy.namespace ? `${r.policy.namespace}/` : ''}${r.policy.name}${r.rule ? ` (rule "${r.rule}")` : ' (defaultAction)'}`,
    `requested  ${r.requestedAt} (${relativeTime(r.requestedAt, now)}) by ${who(r.identity)}, session ${r.session}`,
    `expires    ${r.expiresAt} (${relativeTime(r.expiresAt, now)})`,
    `approvers  ${subjectsText(r.approvers as Record<string, unknown>)}`,
  ];
  if (e.decision) {
    const d = e.decision;
    lines.push(`decision   ${d.decision} by ${d.by.name} at ${d.at}${d.reason ? `: ${d.reason}` : ''}`);
  }
  if (e.closed)
    lines.push(`closed     ${e.closed.outcome} at ${e.closed.at}${e.closed.by ? ` (${e.closed.by.name})` : ''}`);
  lines.push('sql', ...r.sql.split('\n').map((l) => `  ${l}`));
  return `${lines.join('\n')}\n`;
}

const decisionWaiting = (e: ApprovalEntry) =>
  e.state === 'decided' ? 'published; the sidecar applies it when it receives it' : `now ${e.state}`;

interface CommonOptions {
  collector: string;
  tokenFile?: string;
  json?: boolean;
}

/** Runs one subcommand, turning failures into a message on stderr and an exit status. */
function run(name: string, fn: (o: CommonOptions & Record<string, unknown>, target: Target) => Promise<string>) {
  return async (...args: unknown[]) => {
    // Commander passes the positional arguments first, then the options, then the command.
    const o = args[args.length - 2] as CommonOptions & Record<string, unknown>;
    const positional = args.slice(0, -2);
    try {
      const target = { collector: o.collector, token: tokenOf(o.tokenFile) };
      process.stdout.write(await fn({ ...o, id: positional[0] }, target));
    } catch (err) {
      process.stderr.write(`approvals ${name}: ${(err as Error).message}\n`);
      process.exitCode = err instanceof ApprovalsCliError ? err.exitCode : 2;
    }
  };
}

const printEntry = (o: CommonOptions, e: ApprovalEntry) =>
  o.json ? `${JSON.stringify(e, null, 2)}\n` : formatApproval(e, Date.now());

/** `pgwarden approvals list|show|approve|reject`: the collector's approval queue, for the people who decide. */
export function registerApprovals(program: Command): void {
  const approvals = program
    .command('approvals')
    .description(
      'list, show, approve or reject statements held by `review` rules (via a collector; exit 1 when it refuses, 2 when it cannot be asked); keygen makes the collector’s decision signing key',
    );
  const common = (c: Command) =>
    withCollectorOption(c)
      .option('--token-file <file>', 'file holding your approver token (default: env PGWARDEN_APPROVER_TOKEN)')
      .option('--json', 'print JSON as the API returns it');

  common(approvals.command('list').description('held statements, newest first'))
    .option('--state <state>', 'pending, decided, approved, rejected, expired, withdrawn, refused or all', 'pending')
    .action(
      run('list', async (o, target) => {
        const q = new URLSearchParams({ state: String(o.state) });
        const { approvals: entries } = (await call(target, 'GET', `/api/v1/approvals?${q}`)) as {
          approvals: ApprovalEntry[];
        };
        if (o.json) return `${JSON.stringify(entries, null, 2)}\n`;
        return entries.length === 0
          ? `no ${o.state === 'all' ? '' : `${o.state} `}approvals\n`
          : formatApprovalTable(entries, Date.now());
      }),
    );

  common(
    approvals.command('show').argument('<id>').description('one request in full: SQL, who asked, who may decide'),
  ).action(
    run('show', async (o, target) =>
      printEntry(
        o,
        (await call(target, 'GET', `/api/v1/approvals/${encodeURIComponent(String(o.id))}`)) as ApprovalEntry,
      ),
    ),
  );

  for (const decision of ['approve', 'reject'] as const) {
    common(
      approvals
        .command(decision)
        .argument('<id>')
        .description(`${decision} a pending statement (you must be one of its approvers, and not the one who asked)`),
    )
      .option('--reason <text>', 'why (kept in the stream and shown to others; at most 1024 characters)')
      .action(
        run(decision, async (o, target) => {
          const e = (await call(target, 'POST', `/api/v1/approvals/${encodeURIComponent(String(o.id))}`, {
            decision,
            ...(o.reason ? { reason: o.reason } : {}),
          })) as ApprovalEntry;
          if (o.json) return `${JSON.stringify(e, null, 2)}\n`;
          return `${e.decision?.decision ?? decision} ${e.id} as ${e.decision?.by.name ?? '?'}: ${decisionWaiting(e)}\n`;
        }),
      );
  }

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
