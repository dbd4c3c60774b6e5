import type { Suspension } from '@pgwarden/collector';
import type { ControlMessage } from '@pgwarden/policy';
import type { Command } from 'commander';
import { relativeTime } from './approvals.js';
import {
  type ApproverOptions,
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

/** Publishes one action and prints what became of it. */
const act = (name: string, path: (arg: string) => string) =>
  approverAction(`control ${name}`, async (o, target) => {
    const answer = (await callCollector(target, 'POST', path(String(o.arg)), { reason: o.reason })) as {
      control: ControlMessage;
    };
    return o.json ? `${JSON.stringify(answer, null, 2)}\n` : formatControl(answer.control);
  });

/** `pgwarden control terminate|suspend|resume|list`: live control of running sidecars, for approvers. */
export function registerControl(program: Command): void {
  const control = program
    .command('control')
    .description(
      'end a running session, or suspend or resume a policy on every sidecar serving it, now (via a collector, as an approver; exit 1 when it refuses, 2 when it cannot be asked)',
    );
  const reason = (c: Command) =>
    c.requiredOption('--reason <text>', 'why (kept in the control stream and the audit trail; 1 to 1024 characters)');

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
