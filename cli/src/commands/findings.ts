import type { FindingRow } from '@pgwarden/collector';
import { visibleText } from '@pgwarden/collector/client';
import type { Command } from 'commander';
import { closedText, formatFindings } from './audit.js';
import { type ApproverOptions, approverAction, callCollector, withApproverOptions } from './collector-client.js';

/** One line: which finding, now closed by whom and why. */
export function formatClosed(f: FindingRow): string {
  const seq = `${f.seqFrom}${f.seqTo !== f.seqFrom ? `..${f.seqTo}` : ''}`;
  return `finding #${f.id} (${f.kind} session ${visibleText(f.sessionId)} seq ${seq}) ${f.closed ? closedText(f.closed) : 'not closed'}\n`;
}

/**
 * `pgwarden findings list|close`: the chain findings, and closing one by hand once it has been looked into (an
 * `audit.gap.unattributed` never resolves by itself), as an approver, like `pgwarden control`.
 */
export function registerFindings(program: Command): void {
  const findings = program
    .command('findings')
    .description(
      'chain findings of a collector, and closing one by hand with a reason (as an approver; exit 1 when the collector refuses, 2 when it cannot be asked)',
    );
  withApproverOptions(findings.command('list').description('findings, newest first, with the ids close takes'))
    .option('--state <state>', 'open, resolved, closed or all', 'open')
    .option('--kind <kind>', 'only this kind (audit.gap, audit.gap.unattributed, audit.tampered)')
    .option('--session <id>', 'only this session')
    .option('--namespace <ns>', 'only this namespace')
    .option('--limit <n>', 'at most this many (1–1000)', '100')
    .action(
      approverAction('findings list', async (o: ApproverOptions & Record<string, unknown>, target) => {
        const q = new URLSearchParams();
        for (const k of ['state', 'kind', 'session', 'namespace', 'limit'])
          if (typeof o[k] === 'string') q.set(k, o[k] as string);
        const page = (await callCollector(target, 'GET', `/api/v1/findings?${q}`)) as {
          items: FindingRow[];
          next: string | null;
        };
        return o.json ? `${JSON.stringify(page.items, null, 2)}\n` : formatFindings(page.items, page.next);
      }),
    );
  withApproverOptions(
    findings
      .command('close')
      .argument('<id>', 'the finding’s id (findings list shows it)')
      .description('close an open finding: it leaves the open list, with who closed it, when and why'),
  )
    .requiredOption(
      '--reason <text>',
      'why (kept with the finding and in the collector’s audit chain; 1 to 1024 characters)',
    )
    .action(
      approverAction('findings close', async (o, target) => {
        const { finding } = (await callCollector(
          target,
          'POST',
          `/api/v1/findings/${encodeURIComponent(String(o.arg))}/close`,
          { reason: o.reason },
        )) as { finding: FindingRow };
        return o.json ? `${JSON.stringify(finding, null, 2)}\n` : formatClosed(finding);
      }),
    );
}
