import type { ControlApplication, Suspension } from '@pgwarden/collector';
import type { ControlMessage } from '@pgwarden/policy';
import type { Command } from 'commander';
import { relativeTime } from './approvals.js';
import {
  type ApproverOptions,
  type ApproverTarget,
  approverAction,
  CollectorCliError,
  callCollector,
  withApproverOptions,
} from './collector-client.js';
import { textTable } from './text-table.js';

/** `<namespace>/<policy>`, or a bare `<policy>` (a policy without a namespace: `_`), as the API's path segments. */
export function policyPath(ref: string): string {
  const parts = ref.split('/');
  if (parts.length > 2 || parts.some((p) => p === ''))
    throw new CollectorCliError(`${JSON.stringify(ref)} is neither <namespace>/<policy> nor <policy>`, 2);
  return (parts.length === 2 ? parts : ['_', parts[0]]).map(encodeURIComponent).join('/');
}

const AFTER: Record<ControlMessage['kind'], string> = {
  terminate: 'its sidecar ends the session when it receives it',
  suspend: 'every sidecar serving it refuses new logins and ends its sessions',
  resume: 'its sidecars accept logins again',
};

/** One line: what was published, as whom, and what the sidecars do with it. */
export function formatControl(c: ControlMessage): string {
  const target = c.kind === 'terminate' ? c.session : `${c.policy.namespace}/${c.policy.name}`;
  return `${c.kind} ${target} published as ${c.by} (control ${c.id}${c.sig ? ', signed' : ''}): ${AFTER[c.kind]}\n`;
}

export function formatSuspensions(entries: readonly Suspension[], now: number): string {
  if (entries.length === 0) return 'no suspended policies\n';
  const rows = entries.map((s) => [
    `${s.policy.namespace}/${s.policy.name}`,
    relativeTime(s.at, now),
    s.by,
    s.signed ? 'yes' : 'no',
    s.reason.replace(/\s+/g, ' '),
  ]);
  return textTable(['POLICY', 'SUSPENDED', 'BY', 'SIGNED', 'REASON'], rows);
}

/**
 * Asks the collector which sidecars reported applying `c`, until one did (a terminate has one sidecar to hear from;
 * a suspension may have many, so their reports get one more second) or `waitMs` passed.
 */
async function confirmations(target: ApproverTarget, c: ControlMessage, waitMs: number): Promise<ControlApplication[]> {
  const path = `/api/v1/control/${encodeURIComponent(c.id)}?since=${encodeURIComponent(c.at)}`;
  const deadline = Date.now() + waitMs;
  let settle: number | undefined;
  for (;;) {
    const { applied } = (await callCollector(target, 'GET', path)) as { applied: ControlApplication[] };
    if (applied.length > 0) {
      settle ??= Math.min(Date.now() + 1000, deadline);
      if (c.kind === 'terminate' || Date.now() >= settle) return applied;
    }
    if (Date.now() >= deadline) return applied;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** What the sidecars reported; a terminate nobody confirmed is exit status 3. */
export function formatConfirmations(c: ControlMessage, applied: readonly ControlApplication[], waitS: number): string {
  if (applied.length === 0) {
    if (c.kind === 'terminate')
      throw new CollectorCliError(
        `no sidecar reported ending session ${c.session} within ${waitS} s: it may be cut off from NATS (it ends the session when it reconnects) or the session ended already`,
        3,
      );
    return `no sidecar reported applying it within ${waitS} s (a sidecar serving the policy applies it as soon as it is connected to NATS)\n`;
  }
  return applied
    .map((a) => {
      const who = a.source.pod ?? a.source.instance ?? 'a sidecar';
      const where = a.source.namespace ? ` (${a.source.namespace})` : '';
      const n = a.sessionsEnded;
      return `applied by ${who}${where}: ended ${n} session${n === 1 ? '' : 's'}\n`;
    })
    .join('');
}

/** Publishes one action, then (unless --wait 0) reports which sidecars applied it. */
const act = (name: string, path: (arg: string) => string) =>
  approverAction(`control ${name}`, async (o, target) => {
    const answer = (await callCollector(target, 'POST', path(String(o.arg)), { reason: o.reason })) as {
      control: ControlMessage;
    };
    const waitS = Number(o.wait);
    if (!Number.isFinite(waitS) || waitS < 0) throw new CollectorCliError('--wait takes a number of seconds', 2);
    const applied = waitS > 0 ? await confirmations(target, answer.control, waitS * 1000) : undefined;
    if (o.json) return `${JSON.stringify(applied ? { ...answer, applied } : answer, null, 2)}\n`;
    const published = formatControl(answer.control);
    if (!applied) return published;
    process.stdout.write(published);
    return formatConfirmations(answer.control, applied, waitS);
  });

/** `pgwarden control terminate|suspend|resume|list`: live control of running sidecars, for approvers. */
export function registerControl(program: Command): void {
  const control = program
    .command('control')
    .description(
      'end a running session, or suspend or resume a policy on every sidecar serving it, now (via a collector, as an approver; exit 1 when it refuses, 2 when it cannot be asked, 3 when no sidecar confirmed a terminate within --wait)',
    );
  const reason = (c: Command) =>
    c
      .requiredOption('--reason <text>', 'why (kept in the control stream and the audit trail; 1 to 1024 characters)')
      .option('--wait <seconds>', 'how long to wait for sidecars to report applying it (0: do not wait)', '10');

  reason(
    withApproverOptions(
      control.command('terminate').argument('<session-id>').description('end one running session (its sidecar’s)'),
    ),
  ).action(act('terminate', (id) => `/api/v1/sessions/${encodeURIComponent(id)}/terminate`));
  for (const [kind, what] of [
    ['suspend', 'refuse new logins and end every session of a policy, on every sidecar serving it'],
    ['resume', 'lift a suspension'],
  ] as const)
    reason(
      withApproverOptions(
        control.command(kind).argument('<policy>', '<namespace>/<policy>, or <policy> for one without a namespace'),
      ).description(what),
    ).action(act(kind, (ref) => `/api/v1/policies/${policyPath(ref)}/${kind}`));

  withApproverOptions(control.command('list').description('suspended policies')).action(
    approverAction('control list', async (o: ApproverOptions, target) => {
      const { suspensions } = (await callCollector(target, 'GET', '/api/v1/suspensions')) as {
        suspensions: Suspension[];
      };
      return o.json ? `${JSON.stringify(suspensions, null, 2)}\n` : formatSuspensions(suspensions, Date.now());
    }),
  );
}
