import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';
import type {
  AuditEvent,
  FindingRow,
  FullReport,
  SessionSummary,
  SignatureReport,
  SignatureState,
} from '@pgwarden/collector';
import { SIGNATURE_STATES, terminalSafeJson, terminalSafeJsonText, visibleText } from '@pgwarden/collector/client';
import { type Command, InvalidArgumentError } from 'commander';
import { bearerToken, withCollectorOption } from './collector-client.js';
import { publicKeyPem, writePrivateKey } from './ed25519-keygen.js';

const FILTERS = ['namespace', 'policy', 'identity', 'decision', 'kind', 'type', 'table', 'session'] as const;

interface TailEvent {
  id: string;
  time: string;
  type: string;
  session: { id: string; seq: number };
  identity?: { namespace?: string; user?: string; serviceAccount?: string };
  policy?: { name?: string };
  statement?: { text?: string };
  decision?: { action?: string; rule?: string };
  result?: { tag?: string; rows?: number; error?: { code?: string } };
}

/**
 * One human-readable line per event; SQL newlines folded so a line stays a line. The agent writes the SQL: escape
 * sequences, carriage returns and bidi controls in it show as marks (visibleText), never act on the terminal.
 */
export function formatTailLine(e: TailEvent): string {
  return visibleText(tailLine(e));
}

function tailLine(e: TailEvent): string {
  const who = e.identity?.user ?? e.identity?.serviceAccount ?? '-';
  const where = `${e.identity?.namespace ?? '-'}/${e.policy?.name ?? '-'}`;
  const decision = e.decision?.action
    ? `${e.decision.action.toUpperCase()}${e.decision.rule ? `(${e.decision.rule})` : ''}`
    : '';
  const sql = e.statement?.text
    ? ` ${visibleText(e.statement.text)
        .replace(/[ \t\n]+/g, ' ')
        .slice(0, 200)}`
    : '';
  const res = e.result
    ? ` -> ${e.result.error ? `ERROR ${e.result.error.code}` : `${e.result.tag ?? ''} (${e.result.rows ?? 0} rows)`}`
    : '';
  return `${e.time} ${where} ${who} ${e.session.id}#${e.session.seq} ${e.type} ${decision}${sql}${res}`.replace(
    /\s+$/,
    '',
  );
}

/** A reader's (or approver's) token, when given: a collector on loopback needs none. */
const readerToken = (tokenFile: string | undefined) => bearerToken(tokenFile, 'PGWARDEN_COLLECTOR_TOKEN');

const authHeader = (token: string | undefined): Record<string, string> =>
  token ? { authorization: `Bearer ${token}` } : {};

/**
 * A refusal, in the collector's own words where they say more than "unknown token": an OIDC token's reason
 * (`token_expired`: fetch a new one) or a valid token nobody is bound to.
 */
function refusal(status: number, token: string | undefined, body = ''): string {
  let said: { code?: unknown; message?: unknown } | undefined;
  try {
    said = (JSON.parse(body) as { error?: { code?: unknown; message?: unknown } }).error;
  } catch {}
  if (token && said && said.code !== 'unauthorized' && typeof said.message === 'string')
    return `collector answered ${status} ${String(said.code)}: ${said.message}`;
  return `collector answered ${status}: ${token ? 'the token is not a reader’s or approver’s' : 'it needs a reader’s token (set PGWARDEN_COLLECTOR_TOKEN or give --token-file)'}`;
}

/** Follows the collector's SSE stream, reconnecting after a pause when it drops; a refused token ends it (exit 2). */
async function tail(url: string, json: boolean, token: string | undefined): Promise<never> {
  for (;;) {
    await new Promise<void>((resolve) => {
      // An https collector's CA: the system store, or NODE_EXTRA_CA_CERTS (fetch, used by `audit verify`, reads it too).
      const request = url.startsWith('https:') ? httpsRequest : httpRequest;
      const req = request(url, { headers: { accept: 'text/event-stream', ...authHeader(token) } }, (res) => {
        if (res.statusCode === 401 || res.statusCode === 403) {
          const status = res.statusCode;
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            if (body.length < 16_384) body += c;
          });
          res.on('end', () => {
            process.stderr.write(`${refusal(status, token, body)}\n`);
            process.exit(2);
          });
          return;
        }
        if (res.statusCode !== 200) {
          process.stderr.write(`collector answered ${res.statusCode}\n`);
          res.resume();
          resolve();
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const lines = block.split('\n');
            const kind = lines.find((l) => l.startsWith('event: '))?.slice(7);
            const data = lines
              .filter((l) => l.startsWith('data: '))
              .map((l) => l.slice(6))
              .join('\n');
            if (!data) continue;
            if (json) process.stdout.write(`${terminalSafeJsonText(data)}\n`);
            else if (kind === 'audit') process.stdout.write(`${formatTailLine(JSON.parse(data) as TailEvent)}\n`);
            else if (kind === 'finding') process.stdout.write(`!! chain finding: ${terminalSafeJsonText(data)}\n`);
          }
        });
        res.on('end', resolve);
        res.on('error', () => resolve());
      });
      req.on('error', (err) => {
        process.stderr.write(`cannot reach collector: ${err.message}; retrying\n`);
        resolve();
      });
      req.end();
    });
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** What a verification found, as `POST /api/v1/verify` answers it (or as worked out from a store directly). */
export interface VerifyResult {
  total: number;
  failed: FullReport[];
  /** Sessions per signature state (a collector older than signed checkpoints sends none). */
  signatures?: Partial<Record<SignatureState, number>>;
  /** The audit keys checkpoints were judged against, and the keys file's error while a broken one is ignored. */
  auditKeys?: { keys: string[]; error?: string };
  /** Every verified session's report (asked for when sessions are named), not only the failed ones. */
  reports?: FullReport[];
}

/** A session's signed-checkpoint state in a few words (docs/collector.md, "Signed checkpoints"). */
export function describeSignature(s: SignatureReport | undefined): string {
  switch (s?.state) {
    case 'signed':
      return `signed through seq ${s.signedSeq} by ${s.signedBy}`;
    case 'partial':
      return `partial: ${s.unsignedEvents} event(s) after seq ${s.signedSeq} (signed by ${s.signedBy})`;
    case 'unverified':
      return 'unverified: checkpoints not checked, no audit keys';
    case 'unsigned':
      return 'unsigned';
    default:
      return 'signature not reported';
  }
}

const sessionLine = (r: FullReport) =>
  `  session ${visibleText(r.sessionId)} (${r.events} events, seq ${r.firstSeq ?? '-'}..${r.lastSeq ?? '-'}${r.ended ? ', ended' : ''}; ${describeSignature(r.signature)})`;

export function formatReport(v: VerifyResult): string {
  const bad = v.failed;
  const lines = [`verified ${v.total} session(s): ${v.total - bad.length} ok, ${bad.length} with findings`];
  if (v.signatures) {
    const counts = SIGNATURE_STATES.filter((s) => (v.signatures?.[s] ?? 0) > 0).map((s) => `${v.signatures?.[s]} ${s}`);
    const keys = v.auditKeys ? `keys: ${v.auditKeys.keys.join(', ')}` : 'no audit keys';
    lines.push(`signatures: ${counts.length > 0 ? counts.join(', ') : 'none'} (${keys})`);
  }
  if (v.auditKeys?.error) lines.push(`warning: ${v.auditKeys.error}; checked with the keys read before it`);
  const failed = new Set(bad.map((r) => r.sessionId));
  for (const r of bad) {
    lines.push(`${sessionLine(r)}:`);
    for (const f of r.findings)
      lines.push(
        `    ${f.kind} seq ${f.seqFrom}${f.seqTo !== f.seqFrom ? `..${f.seqTo}` : ''}: ${visibleText(f.detail)}`,
      );
  }
  for (const r of v.reports ?? []) if (!failed.has(r.sessionId)) lines.push(`${sessionLine(r)}: ok`);
  return `${lines.join('\n')}\n`;
}

/** The API returns the number of sessions checked and the failing ones in full; every one with `details`. */
async function verifyViaApi(
  base: string,
  sessions: string[] | undefined,
  token: string | undefined,
): Promise<VerifyResult> {
  const r = await reach(base, new URL('/api/v1/verify', base), {
    method: 'POST',
    body: JSON.stringify(sessions ? { sessions, details: true } : {}),
    headers: { 'content-type': 'application/json', ...authHeader(token) },
  });
  if (r.status === 401 || r.status === 403) throw new Error(refusal(r.status, token, await r.text()));
  if (!r.ok) throw new Error(`collector answered ${r.status}: ${await r.text()}`);
  const body = (await r.json()) as Omit<VerifyResult, 'total'> & { sessions: number };
  return {
    total: body.sessions,
    failed: body.failed,
    signatures: body.signatures,
    auditKeys: body.auditKeys,
    reports: body.reports,
  };
}

/** Verifies a store directly, judging checkpoints against the keys in `keysFile` (none: unverified). */
async function verifyStore(o: {
  url?: string;
  dataDir?: string;
  sessions?: string[];
  keysFile?: string;
  requireSigned: boolean;
  graceMs: number;
}): Promise<VerifyResult> {
  // The store, chain and key code only here: the client subcommands start without them (collector/src/client.ts).
  const { AuditStore, schemaV1Rules, watchAuditKeys } = await import('@pgwarden/collector');
  const keys = o.keysFile ? watchAuditKeys(o.keysFile) : undefined;
  const store = await AuditStore.open({
    url: o.url,
    dataDir: o.dataDir,
    rules: schemaV1Rules,
    signatures: keys && { keyring: () => keys.current().value, requireSigned: o.requireSigned, graceMs: o.graceMs },
  });
  try {
    const reports = await store.verify(o.sessions);
    const signatures: Partial<Record<SignatureState, number>> = {};
    for (const r of reports) signatures[r.signature.state] = (signatures[r.signature.state] ?? 0) + 1;
    return {
      total: reports.length,
      failed: reports.filter((r) => !r.ok),
      signatures,
      ...(keys ? { auditKeys: { keys: keys.current().value.keys.map((k) => k.name) } } : {}),
      ...(o.sessions ? { reports } : {}),
    };
  } finally {
    await store.close();
  }
}

/**
 * Verifies JSON-lines files of audit events (a sidecar's `--audit file:` trail, a collector's jsonl export), `-` for
 * standard input, without a collector or a store: the same chain and checkpoint rules, in memory. A line that is not
 * an audit event is a finding of its own, so a damaged file cannot pass.
 */
async function verifyFiles(o: {
  files: string[];
  sessions?: string[];
  keysFile?: string;
  requireSigned: boolean;
}): Promise<VerifyResult> {
  const { parseAuditKeys, verifyEvents } = await import('@pgwarden/collector');
  const keyring = o.keysFile ? parseAuditKeys(readFileSync(o.keysFile, 'utf8'), o.keysFile) : undefined;
  const events: AuditEvent[] = [];
  const unreadable: string[] = [];
  for (const file of o.files) {
    const input = file === '-' ? process.stdin : createReadStream(file, { encoding: 'utf8' });
    let n = 0;
    for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
      n++;
      if (line.trim() === '') continue;
      let e: unknown;
      try {
        e = JSON.parse(line);
      } catch {
        e = undefined;
      }
      const session = (e as { session?: { id?: unknown; seq?: unknown } } | undefined)?.session;
      if (typeof session?.id === 'string' && Number.isInteger(session.seq)) events.push(e as AuditEvent);
      else unreadable.push(`${file === '-' ? 'stdin' : file}:${n}`);
    }
  }
  const reports = verifyEvents(events, { keyring, requireSigned: o.requireSigned, sessions: o.sessions });
  const signatures: Partial<Record<SignatureState, number>> = {};
  for (const r of reports) signatures[r.signature.state] = (signatures[r.signature.state] ?? 0) + 1;
  const failed = reports.filter((r) => !r.ok);
  if (unreadable.length > 0)
    failed.push({
      sessionId: '(lines that are not audit events)',
      events: 0,
      firstSeq: null,
      lastSeq: null,
      ended: false,
      ok: false,
      signature: { state: 'unsigned', signedSeq: null, signedBy: null, unsignedEvents: 0 },
      findings: unreadable.slice(0, 20).map((at) => ({
        kind: 'audit.tampered' as const,
        sessionId: '',
        seqFrom: 0,
        seqTo: 0,
        detail: `${at} is not an audit event (JSON with session.id and session.seq)`,
      })),
    });
  return {
    total: reports.length,
    failed,
    signatures,
    ...(keyring ? { auditKeys: { keys: keyring.keys.map((k) => k.name) } } : {}),
    ...(o.sessions ? { reports } : {}),
  };
}

/**
 * `pgwarden audit <name>`: one page of a collector list route, each `filters` flag passed as the query parameter of
 * its name, printed by `format` (or as JSON); exit 2 when it could not ask, and with `failWhenAny` 1 when it listed
 * anything.
 */
function listCommand<T>(
  audit: Command,
  c: {
    name: string;
    description: string;
    route: string;
    filters: [flag: string, description: string, defaultValue?: string][];
    limit: string;
    format: (items: readonly T[], next: string | null) => string;
    failWhenAny: boolean;
  },
): void {
  const cmd = withCollectorOption(audit.command(c.name).description(c.description)).option(
    '--token-file <file>',
    'file holding a reader’s token (default: env PGWARDEN_COLLECTOR_TOKEN)',
  );
  for (const [flag, description, value] of c.filters) cmd.option(flag, description, value);
  const params = [...c.filters.map(([flag]) => flag.slice(2, flag.indexOf(' '))), 'limit'];
  cmd
    .option('--limit <n>', 'at most this many (1–1000)', c.limit)
    .option('--json', `print the ${c.name} as JSON`)
    .action(async (o) => {
      try {
        const page = await getPage<T>(o, c.route, params);
        process.stdout.write(o.json ? `${terminalSafeJson(page.items, 2)}\n` : c.format(page.items, page.next));
        process.exitCode = c.failWhenAny && page.items.length > 0 ? 1 : 0;
      } catch (err) {
        process.stderr.write(`audit ${c.name}: ${(err as Error).message}\n`);
        process.exitCode = 2;
      }
    });
}

/** One page of a collector list route, with the query options given; a refusal or an error status throws. */
async function getPage<T>(
  o: Record<string, unknown> & { collector: string; tokenFile?: string },
  route: string,
  params: readonly string[],
): Promise<{ items: T[]; next: string | null }> {
  const url = new URL(route, o.collector);
  for (const k of params) if (o[k] !== undefined) url.searchParams.set(k, String(o[k]));
  const token = readerToken(o.tokenFile);
  const r = await reach(o.collector, url, { headers: authHeader(token) });
  if (r.status === 401 || r.status === 403) throw new Error(refusal(r.status, token, await r.text()));
  if (!r.ok) throw new Error(`collector answered ${r.status}: ${await r.text()}`);
  return (await r.json()) as { items: T[]; next: string | null };
}

/** The sessions GET /api/v1/sessions listed, one line each. */
export function formatSessions(items: readonly SessionSummary[], next: string | null): string {
  if (items.length === 0) return 'no sessions\n';
  const lines = items.map(
    (s) =>
      `${s.firstTime ?? '-'} ${visibleText(s.id)} ${visibleText(s.identity ?? '-')} ${visibleText(s.policy ?? '-')} statements=${s.statements} ` +
      `denied=${s.denied} chain=${s.chain} signature=${s.signature} ${s.state}` +
      `${s.state === 'interrupted' && s.lastHeard ? ` (last heard ${s.lastHeard})` : ''}`,
  );
  if (next) lines.push('… more: raise --limit or filter');
  return `${lines.join('\n')}\n`;
}

/** Who closed a finding, when and why (the reason on one line, as the person wrote it otherwise). */
export function closedText(c: NonNullable<FindingRow['closed']>): string {
  const oidc = c.oidc ? ` (${visibleText(c.oidc.subject)} at ${visibleText(c.oidc.issuer)})` : '';
  return `closed ${c.at} by ${visibleText(c.by)}${oidc}: ${visibleText(c.reason.replace(/\s+/g, ' '))}`;
}

/** The findings GET /api/v1/findings listed, one line each, with the id `pgwarden findings close` takes. */
export function formatFindings(items: readonly FindingRow[], next: string | null): string {
  if (items.length === 0) return 'no findings\n';
  const lines = items.map(
    (f) =>
      `#${f.id} ${f.detectedAt} ${f.kind} session ${visibleText(f.sessionId)}${f.sessionKnown ? '' : ' (no record)'}` +
      `${f.namespace ? ` [${visibleText(f.namespace)}]` : ''} seq ${f.seqFrom}${f.seqTo !== f.seqFrom ? `..${f.seqTo}` : ''}: ${visibleText(f.detail)}` +
      `${f.resolvedAt ? ` (resolved ${f.resolvedAt})` : ''}${f.closed ? ` (${closedText(f.closed)})` : ''}`,
  );
  if (next) lines.push('… more: raise --limit');
  return `${lines.join('\n')}\n`;
}

export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('follow and verify the audit trail');
  const t = withCollectorOption(
    audit.command('tail').description('live audit events from a collector (server-sent events), one line each'),
  )
    .option('--token-file <file>', 'file holding a reader’s token (default: env PGWARDEN_COLLECTOR_TOKEN)')
    .option('--json', 'print the raw JSON events');
  for (const f of FILTERS) t.option(`--${f} <value>`, `only events whose ${f} matches`);
  t.action(async (o) => {
    const url = new URL('/api/v1/stream', o.collector);
    for (const f of FILTERS) if (o[f]) url.searchParams.set(f, o[f]);
    let token: string | undefined;
    try {
      token = readerToken(o.tokenFile);
    } catch (err) {
      process.stderr.write(`audit tail: ${(err as Error).message}\n`);
      process.exit(2);
    }
    await tail(url.toString(), Boolean(o.json), token);
  });

  listCommand(audit, {
    name: 'findings',
    description:
      'chain findings from a collector (gaps, cut tails, chains deleted whole, tampering), newest first; exit ' +
      'status 1 when any is listed',
    route: '/api/v1/findings',
    filters: [
      ['--state <state>', 'open, resolved, closed or all', 'open'],
      ['--kind <kind>', 'only this kind (audit.gap, audit.gap.unattributed, audit.tampered)'],
      ['--namespace <ns>', 'only sessions of this namespace'],
      ['--session <id>', 'only this session'],
    ],
    limit: '100',
    format: formatFindings,
    failWhenAny: true,
  });

  listCommand(audit, {
    name: 'sessions',
    description: 'sessions from a collector, newest first: chain, signature and state (open, ended, interrupted)',
    route: '/api/v1/sessions',
    filters: [
      ['--state <state>', 'only open, ended or interrupted sessions'],
      ['--chain <status>', 'only this chain status (ok, pending, gap, tampered)'],
      ['--signature <state>', 'only this signature state (signed, partial, unsigned, unverified)'],
      ['--namespace <ns>', 'only this namespace'],
      ['--identity <identity>', 'only this identity'],
    ],
    limit: '50',
    format: formatSessions,
    failWhenAny: false,
  });

  audit
    .command('token')
    .description(
      'make a bearer token for the collector: writes it to --token-out (mode 0600) and prints the entry for a ' +
        '--readers-file or --approvers-file, which holds only its SHA-256',
    )
    .requiredOption('--name <name>', 'who holds it (shown in decisions and in the read log)')
    .requiredOption('--token-out <file>', 'where to write the token (refuses to overwrite); give it to its holder')
    .option('--groups <list>', 'comma-separated groups (matched against approval.approvers groups)')
    .option('--namespaces <list>', 'comma-separated namespaces to limit reads (and approvals) to; default all')
    .action((o: { name: string; tokenOut: string; groups?: string; namespaces?: string }) => {
      const list = (v: string | undefined) =>
        (v ?? '')
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean);
      const token = randomBytes(32).toString('base64url');
      try {
        writeFileSync(o.tokenOut, `${token}\n`, { mode: 0o600, flag: 'wx' });
      } catch (err) {
        process.stderr.write(
          `audit token: cannot write ${o.tokenOut}: ${(err as NodeJS.ErrnoException).code ?? 'error'}\n`,
        );
        process.exit(2);
      }
      const entry = {
        name: o.name,
        groups: list(o.groups),
        ...(o.namespaces ? { namespaces: list(o.namespaces) } : {}),
        tokenSha256: createHash('sha256').update(token, 'utf8').digest('hex'),
      };
      // One flow-style YAML list item (JSON is YAML): paste it into the file as it is.
      process.stdout.write(`- ${JSON.stringify(entry)}\n`);
    });

  audit
    .command('keygen')
    .description(
      'make a sidecar audit signing key: writes the Ed25519 private key (PEM, mode 0600) for ' +
        '`pgwarden sidecar --audit-signing-key` (chart: audit.signingKeySecret) and prints the public key, its key ' +
        "id and the entry for the collector's --audit-keys file (chart: collector.auditKeys)",
    )
    .requiredOption('--out <file>', 'where to write the private key (refuses to overwrite)')
    .option('--name <name>', "the key's name in the collector's keys file (default: its key id)")
    .option('--namespaces <list>', 'comma-separated namespaces whose events the key may vouch for; default all')
    .action(async (o: { out: string; name?: string; namespaces?: string }) => {
      const { ed25519KeyId } = await import('@pgwarden/policy');
      const publicKey = writePrivateKey(o.out, 'audit keygen');
      const pem = publicKeyPem(publicKey);
      const keyId = ed25519KeyId(publicKey);
      const namespaces = (o.namespaces ?? '')
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      const entry = { name: o.name ?? keyId, publicKey: pem, ...(namespaces.length ? { namespaces } : {}) };
      // Comments, then one flow-style YAML list item (JSON is YAML): the output can be pasted under `keys:` as it is.
      process.stdout.write(
        `${pem}# key id ${keyId}\n# entry for the collector's --audit-keys file (under keys:) or collector.auditKeys:\n- ${JSON.stringify(entry)}\n`,
      );
    });

  audit
    .command('verify')
    .description(
      're-verify every session hash chain and judge its signed checkpoints; exit status 1 on any gap, tampering ' +
        '(or, with --require-signed-audit, unsigned session), 2 if verification could not run',
    )
    .option('--collector <url>', 'ask a running collector (POST /api/v1/verify); it judges with its own keys')
    .option('--token-file <file>', 'with --collector: a reader’s token (default: env PGWARDEN_COLLECTOR_TOKEN)')
    .option('--store <url>', 'read the PostgreSQL store directly (or env PGWARDEN_COLLECTOR_STORE)')
    .option('--data-dir <dir>', 'read an embedded (PGlite) store directly')
    .option(
      '--file <path>',
      'verify JSON-lines audit events from a file (a sidecar --audit file: trail, a jsonl export; - for stdin), repeatable',
      (v: string, p: string[] = []) => [...p, v],
    )
    .option('--session <id>', 'only this session (repeatable); each is listed', (v: string, p: string[] = []) => [
      ...p,
      v,
    ])
    .option(
      '--audit-keys <file>',
      'with --store/--data-dir/--file: the keys file checkpoints are judged against (as the collector’s --audit-keys)',
    )
    .option('--require-signed-audit', 'with --store/--data-dir/--file: as the collector’s flag (needs --audit-keys)')
    .option(
      '--gap-grace <seconds>',
      'with --require-signed-audit: sessions stored more recently are not held to it yet',
      (v: string) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('--gap-grace must be a non-negative integer');
        return n;
      },
      30,
    )
    .option('--json', 'print the report as JSON')
    .action(async (o) => {
      try {
        let result: VerifyResult;
        const storeUrl: string | undefined =
          o.store ?? (o.collector || o.dataDir || o.file ? undefined : process.env.PGWARDEN_COLLECTOR_STORE);
        if (o.collector && (o.auditKeys || o.requireSignedAudit))
          throw new Error('--audit-keys and --require-signed-audit are the collector’s own settings with --collector');
        if (o.requireSignedAudit && !o.auditKeys) throw new Error('--require-signed-audit needs --audit-keys');
        if (o.collector) result = await verifyViaApi(o.collector, o.session, readerToken(o.tokenFile));
        else if (o.file)
          result = await verifyFiles({
            files: o.file,
            sessions: o.session,
            keysFile: o.auditKeys,
            requireSigned: Boolean(o.requireSignedAudit),
          });
        else if (storeUrl || o.dataDir)
          result = await verifyStore({
            url: storeUrl,
            dataDir: o.dataDir,
            sessions: o.session,
            keysFile: o.auditKeys,
            requireSigned: Boolean(o.requireSignedAudit),
            graceMs: o.gapGrace * 1000,
          });
        else throw new Error('give --collector, --store, --data-dir or --file');
        const ok = result.failed.length === 0;
        const { total, failed, ...rest } = result;
        process.stdout.write(
          o.json ? `${terminalSafeJson({ ok, sessions: total, failed, ...rest }, 2)}\n` : formatReport(result),
        );
        process.exitCode = ok ? 0 : 1;
      } catch (err) {
        process.stderr.write(`audit verify: ${(err as Error).message}\n`);
        process.exitCode = 2;
      }
    });
}

/** fetch, with an error that names the collector and why it could not be reached (undici says only "fetch failed"). */
async function reach(collector: string, url: URL, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(
      `cannot reach the collector at ${collector}: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
    );
  }
}
