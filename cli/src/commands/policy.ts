import { readFileSync } from 'node:fs';
import {
  type AuditEvent,
  analyzeSql,
  createSessionState,
  type Decision,
  decide,
  formatIssue,
  initSqlParser,
  lintPolicySpec,
  objectRef,
  type PolicyDocuments,
  type PolicyIssue,
  parseDuration,
  parsePolicyDocuments,
  type SqlAnalysis,
  type Subject,
} from '@pgwarden/policy';
import type { Command } from 'commander';
import { bearerToken, withCollectorOption } from './collector-client.js';
import { type FailOn, failed, formatReplay, replayStatements } from './policy-replay.js';

/** Reads and parses every file; issues carry the file name in `object` when the document has none. */
export function loadPolicyFiles(files: string[]): PolicyDocuments & { byFile: Map<string, PolicyIssue[]> } {
  const all: PolicyDocuments & { byFile: Map<string, PolicyIssue[]> } = {
    policies: [],
    maskingRules: [],
    errors: [],
    byFile: new Map(),
  };
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const issue: PolicyIssue = { path: '', message: `cannot read: ${(e as Error).message}`, severity: 'error' };
      all.errors.push(issue);
      all.byFile.set(file, [issue]);
      continue;
    }
    const docs = parsePolicyDocuments(text);
    all.policies.push(...docs.policies);
    all.maskingRules.push(...docs.maskingRules);
    all.errors.push(...docs.errors);
    const issues = [...docs.errors];
    for (const p of docs.policies) {
      for (const i of lintPolicySpec(p.spec)) issues.push({ ...i, object: objectRef(p) });
    }
    all.byFile.set(file, issues);
  }
  return all;
}

type LoadedPolicy = PolicyDocuments['policies'][number];

/**
 * Two policies of one namespace on the same listen port whose pod selectors are not provably disjoint: a pod both
 * select cannot get both sidecars, so the webhook refuses it. Disjoint only when some label both require with
 * `matchLabels` has different values; anything else (an empty selector selects every pod, expressions) may overlap.
 */
function portCollisions(policies: readonly LoadedPolicy[]): PolicyIssue[] {
  const out: PolicyIssue[] = [];
  const labels = (p: LoadedPolicy) => (p.spec.podSelector?.matchLabels ?? {}) as Record<string, string>;
  for (let i = 0; i < policies.length; i++) {
    for (let j = i + 1; j < policies.length; j++) {
      const [a, b] = [policies[i], policies[j]];
      if ((a.metadata.namespace ?? 'default') !== (b.metadata.namespace ?? 'default')) continue;
      const port = a.spec.listen?.port ?? 5432;
      if (port !== (b.spec.listen?.port ?? 5432)) continue;
      const la = labels(a);
      const lb = labels(b);
      if (Object.keys(la).some((k) => k in lb && lb[k] !== la[k])) continue;
      out.push({
        path: '/spec/listen/port',
        object: objectRef(b),
        severity: 'warning',
        message: `listens on port ${port} like ${objectRef(a)}, and their podSelectors may select the same pods: such a pod would be refused (give one another listen.port, or podSelectors that exclude each other)`,
      });
    }
  }
  return out;
}

/** `pgwarden policy lint`: exit code 1 when any file has an error (warnings only print). */
export function lintFiles(files: string[], write: (s: string) => void): number {
  const loaded = loadPolicyFiles(files);
  let errors = 0;
  for (const [file, issues] of loaded.byFile) {
    for (const i of issues) write(`${file}: ${formatIssue(i)}\n`);
    errors += issues.filter((i) => i.severity === 'error').length;
  }
  for (const i of portCollisions(loaded.policies)) write(`${formatIssue(i)}\n`);
  write(`${loaded.policies.length} policies, ${loaded.maskingRules.length} masking rules, ${errors} errors\n`);
  return errors > 0 ? 1 : 0;
}

export function formatExplain(name: string, analysis: SqlAnalysis, d: Decision): string {
  const lines = [`policy ${name}: ${d.action.toUpperCase()}${d.rule ? ` (rule "${d.rule}")` : ''} — ${d.message}`];
  if (d.code) lines.push(`  SQLSTATE ${d.code}`);
  if (d.maxRows !== undefined) lines.push(`  maxRows ${d.maxRows}`);
  if (d.timeoutMs !== undefined) lines.push(`  timeout ${d.timeoutMs} ms`);
  if (d.maxAffected !== undefined)
    lines.push(
      `  maxRowsAffected ${d.maxAffected} (changing more rows, counting triggers, cascades and functions, is undone)`,
    );
  if (analysis.ok) {
    analysis.statements.forEach((a, i) => {
      const s = d.statements[i];
      lines.push(`  statement ${i + 1}: ${a.text.replace(/\s+/g, ' ').slice(0, 160)}`);
      lines.push(`    kind ${a.kind}; operations ${a.kinds.join(', ')}${a.writes ? '; writes' : ''}`);
      if (a.relations.length)
        lines.push(`    relations ${a.relations.map((r) => `${r.schema}.${r.name} (${r.access})`).join(', ')}`);
      if (a.functions.length) lines.push(`    functions ${a.functions.map((f) => `${f.schema}.${f.name}`).join(', ')}`);
      for (const x of a.dangerous) lines.push(`    dangerous ${x.category}: ${x.detail}`);
      if (a.identityChange) lines.push(`    identity change: ${a.identityChange}`);
      if (a.unsafeSetting) lines.push(`    unsafe setting: ${a.unsafeSetting}`);
      if (a.missingWhere.length) lines.push(`    without WHERE: ${a.missingWhere.join(', ')}`);
      lines.push(`    → ${s.action.toUpperCase()}${s.rule ? ` by rule "${s.rule}"` : ''} [${s.reason}] ${s.message}`);
    });
  }
  return `${lines.join('\n')}\n`;
}

export function registerPolicy(program: Command): void {
  const policy = program
    .command('policy')
    .description('check DatabaseAccessPolicy / MaskingRule files and try SQL against them');
  policy
    .command('lint')
    .description('schema and semantic checks (never-matching and shadowed rules, bad globs); exits 1 on errors')
    .argument('<files...>', 'YAML files (several documents each)')
    .action((files: string[]) => {
      process.exitCode = lintFiles(files, (s) => process.stdout.write(s));
    });
  policy
    .command('explain')
    .description('print the decision each policy gives a SQL string, and why')
    .argument('<files...>', 'YAML files')
    .requiredOption('--sql <sql>', 'the SQL (one Query; several statements allowed)')
    .option(
      '--group <group>',
      'OIDC group of the subject (repeatable)',
      (g: string, all: string[]) => [...all, g],
      [] as string[],
    )
    .option('--service-account <sa>', 'service account, as namespace/name or name')
    .option('--user <sub>', 'OIDC subject')
    .option('--search-path <schemas>', 'comma-separated search_path', 'public')
    .option('--policy <name>', 'only this policy')
    .action(
      async (
        files: string[],
        o: {
          sql: string;
          group: string[];
          serviceAccount?: string;
          user?: string;
          searchPath: string;
          policy?: string;
        },
      ) => {
        const loaded = loadPolicyFiles(files);
        for (const e of loaded.errors) process.stderr.write(`${formatIssue(e)}\n`);
        const policies = loaded.policies.filter((p) => o.policy === undefined || p.metadata.name === o.policy);
        if (policies.length === 0) {
          process.stderr.write('no valid policy found\n');
          process.exitCode = 2;
          return;
        }
        await initSqlParser();
        const [ns, sa] = o.serviceAccount?.includes('/')
          ? o.serviceAccount.split('/', 2)
          : [undefined, o.serviceAccount];
        const subject: Subject = { groups: o.group, namespace: ns, serviceAccount: sa, user: o.user };
        for (const p of policies) {
          const session = createSessionState({
            searchPath: o.searchPath.split(',').map((s) => s.trim()),
            user: p.spec.role,
          });
          const analysis = analyzeSql(o.sql, session);
          process.stdout.write(
            formatExplain(
              p.metadata.name,
              analysis,
              decide(p.spec, analysis, { ...subject, namespace: subject.namespace ?? p.metadata.namespace }),
            ),
          );
        }
      },
    );

  withCollectorOption(
    policy
      .command('replay')
      .description(
        "what these policies would have decided for the statements in a collector's audit trail, against what was " +
          'decided then: a policy change tried on real traffic before it reaches the agents',
      )
      .argument(
        '<files...>',
        'YAML files: one policy (replayed against every event fetched), or several, matched by name',
      ),
  )
    .option('--token-file <file>', 'file holding a reader’s token (default: env PGWARDEN_COLLECTOR_TOKEN)')
    .option(
      '--audit-file <file>',
      'replay a sidecar’s audit file (`--audit file:PATH`, JSON lines) instead of asking a collector',
    )
    .option('--policy <name>', 'only the trail of the policy of this name')
    .option('--namespace <ns>', 'only the trail of this namespace')
    .option('--since <duration>', 'how far back from now (e.g. 30m, 24h, 7d)', '24h')
    .option('--from <time>', 'start (RFC 3339) instead of --since')
    .option('--to <time>', 'end (RFC 3339; default now)')
    .option('--max-statements <n>', 'fetch at most this many statement events (newest first)', '50000')
    .option('--fail-on <what>', 'exit 1 when: never, denied (a statement would be newly denied) or changed', 'never')
    .option('--json', 'print the report as JSON')
    .action(async (files: string[], o: ReplayCliOptions) => {
      try {
        process.exitCode = await replayCommand(files, o, (s) => process.stdout.write(s));
      } catch (err) {
        process.stderr.write(`policy replay: ${(err as Error).message}\n`);
        process.exitCode = 2;
      }
    });
}

interface ReplayCliOptions {
  collector: string;
  tokenFile?: string;
  policy?: string;
  namespace?: string;
  since: string;
  from?: string;
  to?: string;
  maxStatements: string;
  failOn: string;
  json?: boolean;
  auditFile?: string;
}

/** Fetches the trail, replays it and prints the report; returns the exit status (0, or 1 per --fail-on). */
async function replayCommand(files: string[], o: ReplayCliOptions, write: (s: string) => void): Promise<number> {
  if (!['never', 'denied', 'changed'].includes(o.failOn)) throw new Error('--fail-on must be never, denied or changed');
  const max = Number(o.maxStatements);
  if (!Number.isInteger(max) || max < 1) throw new Error('--max-statements must be a positive integer');
  const loaded = loadPolicyFiles(files);
  const bad = loaded.errors.filter((e) => e.severity === 'error');
  if (bad.length) throw new Error(`the policy files have errors (pgwarden policy lint): ${formatIssue(bad[0])}`);
  const policies = loaded.policies.filter(
    (p) => o.policy === undefined || loaded.policies.length === 1 || p.metadata.name === o.policy,
  );
  if (policies.length === 0) throw new Error('no policy to replay in the files given');
  let from = o.from;
  if (!from) {
    const days = /^([0-9]{1,4})d$/.exec(o.since);
    const ms = days ? Number(days[1]) * 86_400_000 : parseDuration(o.since);
    if (ms === undefined) throw new Error(`--since ${o.since} is not a duration such as 24h or 7d`);
    from = new Date(Date.now() - ms).toISOString();
  }
  const events = o.auditFile
    ? readAuditFile(o.auditFile, { policy: o.policy, namespace: o.namespace, from, to: o.to, max })
    : await fetchStatements(o, from, max);
  await initSqlParser();
  const report = replayStatements(events, policies);
  write(o.json ? `${JSON.stringify(report, null, 2)}\n` : formatReplay(report));
  return failed(report, o.failOn as FailOn) ? 1 : 0;
}

/** Statement events from the collector, newest first, paged, at most `max`. */
async function fetchStatements(o: ReplayCliOptions, from: string, max: number): Promise<AuditEvent[]> {
  const token = bearerToken(o.tokenFile, 'PGWARDEN_COLLECTOR_TOKEN');
  const events: AuditEvent[] = [];
  let cursor: string | null = null;
  do {
    const url = new URL('/api/v1/events', o.collector);
    const q: Record<string, string | undefined> = {
      type: 'statement',
      policy: o.policy,
      namespace: o.namespace,
      from,
      to: o.to,
      limit: String(Math.min(1000, max - events.length)),
      cursor: cursor ?? undefined,
    };
    for (const [k, v] of Object.entries(q)) if (v !== undefined) url.searchParams.set(k, v);
    let r: Response;
    try {
      r = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      throw new Error(`cannot reach the collector at ${o.collector}: ${cause?.code ?? (err as Error).message}`);
    }
    if (!r.ok) throw new Error(`collector answered ${r.status}: ${(await r.text()).slice(0, 300)}`);
    const page = (await r.json()) as { items: AuditEvent[]; next: string | null };
    events.push(...page.items);
    cursor = page.next;
  } while (cursor && events.length < max);
  return events;
}

/**
 * Statement events from a sidecar's audit file (`--audit file:PATH`, one JSON event per line), with the same
 * filters as the collector's API; the newest `max` when there are more. Lines that are not events are skipped.
 */
export function readAuditFile(
  path: string,
  f: { policy?: string; namespace?: string; from: string; to?: string; max: number },
): AuditEvent[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read --audit-file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const from = Date.parse(f.from);
  const to = f.to ? Date.parse(f.to) : Number.POSITIVE_INFINITY;
  const out: AuditEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let e: AuditEvent;
    try {
      e = JSON.parse(line) as AuditEvent;
    } catch {
      continue;
    }
    if (e.type !== 'statement' || !e.session || !e.statement) continue;
    if (f.policy !== undefined && e.policy?.name !== f.policy) continue;
    if (f.namespace !== undefined && e.identity?.namespace !== f.namespace) continue;
    const t = Date.parse(e.time);
    if (!(t >= from && t < to)) continue;
    out.push(e);
  }
  return out.slice(-f.max);
}
