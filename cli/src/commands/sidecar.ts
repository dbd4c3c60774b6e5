import { readFileSync } from 'node:fs';
import { isLoopbackHost, parseDuration } from '@pgwarden/policy';
import {
  AUDIT_CLI_OPTIONS,
  type AuditFlags,
  approvalGateForSink,
  auditFromFlags,
  CHANNEL_BINDING_MODES,
  type ChannelBindingMode,
  type CredentialsSource,
  type SidecarLogger,
  type SslMode,
  startGovernedSidecar,
  startSidecar,
  undeliveredLogParts,
  undeliveredMessage,
} from '@pgwarden/sidecar';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type Logger, pino } from 'pino';

const SSLMODES: SslMode[] = ['disable', 'require', 'verify-ca', 'verify-full'];

export interface Upstream {
  host: string;
  port: number;
  database: string;
  sslmode: SslMode;
  /** Only when the URL names it: otherwise the policy's `database.channelBinding` (or libpq's default, prefer). */
  channelBinding?: ChannelBindingMode;
  /** Only when the URL carries them (local use); production mounts a credentials directory. */
  username?: string;
  password?: string;
}

/**
 * postgres://[user[:password]@]host[:port]/dbname?sslmode=...&channel_binding=...; sslmode defaults to verify-full
 * (fail safe), channel_binding to libpq's prefer.
 */
export function parseUpstream(value: string): Upstream {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('--upstream must be a URL like postgres://host:5432/dbname?sslmode=verify-full');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:')
    throw new InvalidArgumentError('--upstream must start with postgres://');
  const sslmode = (url.searchParams.get('sslmode') ?? 'verify-full') as SslMode;
  if (!SSLMODES.includes(sslmode))
    throw new InvalidArgumentError(`--upstream sslmode must be one of ${SSLMODES.join(', ')}`);
  const channelBinding = url.searchParams.get('channel_binding') ?? undefined;
  if (channelBinding !== undefined && !CHANNEL_BINDING_MODES.includes(channelBinding as ChannelBindingMode))
    throw new InvalidArgumentError(`--upstream channel_binding must be one of ${CHANNEL_BINDING_MODES.join(', ')}`);
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!url.hostname || !database) throw new InvalidArgumentError('--upstream needs a host and a database name');
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port ? Number(url.port) : 5432,
    database,
    sslmode,
    ...(channelBinding ? { channelBinding: channelBinding as ChannelBindingMode } : {}),
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
  };
}

export function parseHostPort(flag: string, value: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const port = Number(value.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidArgumentError(`${flag} must be HOST:PORT`);
  return { host: value.slice(0, i).replace(/^\[|\]$/g, '') || '127.0.0.1', port };
}

/** "10s", "500ms", "2m" or plain seconds. */
export function parseGrace(value: string, flag = '--grace-period'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`${flag} must be a duration like 10s, 500ms or 2m`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] ?? 's']!);
}

/** `--oidc-max-token-lifetime`: a policy duration (`24h`, `90m`, `1h30m`), in seconds. */
export function parseLifetime(value: string): number {
  const ms = parseDuration(value.trim());
  if (ms === undefined || ms < 1000)
    throw new InvalidArgumentError('--oidc-max-token-lifetime must be a duration of at least 1s, like 24h or 90m');
  return ms / 1000;
}

const envName = (flags: string) =>
  `PGWARDEN_${flags.replace(/^--/, '').split(' ')[0].replace(/-/g, '_').toUpperCase()}`;

/**
 * `pgwarden sidecar`: the wire proxy. Every flag has an environment variable (shown in --help); flags win.
 * With --policy the governed sidecar (sidecar/src/governance) decides, masks and audits per policy; without it
 * every statement is allowed and still audited.
 */
export function registerSidecar(program: Command): void {
  const cmd = program
    .command('sidecar')
    .description('run the PostgreSQL wire proxy: policy decisions, masking and audit in front of one database');
  const opt = (flags: string, description: string, defaultValue?: string, parse?: (v: string) => unknown) => {
    const o = new Option(flags, description).env(envName(flags));
    if (defaultValue !== undefined) o.default(defaultValue);
    if (parse) o.argParser(parse);
    cmd.addOption(o);
  };
  opt(
    '--listen <host:port>',
    'client listener (keep it on loopback: the agent shares the pod network)',
    '127.0.0.1:5432',
  );
  opt(
    '--upstream <url>',
    'postgres://host:port/dbname?sslmode=disable|require|verify-ca|verify-full (default verify-full)' +
      '&channel_binding=disable|prefer|require (default prefer: SCRAM-SHA-256-PLUS over TLS when offered)',
  );
  opt(
    '--credentials-dir <dir>',
    'directory with files "username" and "password" (a mounted Secret); re-read when they change',
  );
  opt('--ca-file <file>', 'PEM CA bundle for verify-ca / verify-full (default: the system store)');
  opt(
    '--policy <path>',
    'DatabaseAccessPolicy/MaskingRule YAML file or directory; without it every statement is allowed',
  );
  opt(
    '--oidc-ca-file <file>',
    'PEM CA bundle trusted for the OIDC issuer (authentication.mode oidc; default: Node roots)',
  );
  opt(
    '--oidc-max-token-lifetime <duration>',
    'longest OIDC token lifetime accepted (exp - iat) when the policy sets no authentication.oidc.maxTokenLifetime',
    '24h',
  );
  for (const [flags, description, def] of AUDIT_CLI_OPTIONS) opt(flags, description, def);
  opt('--http <host:port|off>', 'admin HTTP: /healthz, /readyz, /metrics', '127.0.0.1:9187');
  opt(
    '--max-statement-bytes <n>',
    'largest Query/Parse text accepted (SQLSTATE 54000 beyond; default 67108864, with --policy 1048576)',
  );
  opt(
    '--max-buffered-statement-bytes <n>',
    'Query/Parse text of 64 KiB or more held at once over all sessions (SQLSTATE 53200 beyond; default 134217728, ' +
      'or twice --max-statement-bytes when larger)',
  );
  opt(
    '--statement-stall-timeout <duration>',
    'when a large statement does not fit --max-buffered-statement-bytes, end sessions whose statement has stopped ' +
      'arriving for this long to make room (FATAL 08P01); 0 = never',
    '10s',
  );
  opt(
    '--catalog-query-timeout <duration>',
    'with --policy: longest one statement waits for the catalog (masking column rules, function rules) in all, ' +
      'however many catalog queries its checks need, and longest one catalog query may run (statement_timeout; a ' +
      'connection silent 1s longer is closed and reopened later); a statement whose catalog check fails or does ' +
      'not end in time is refused (SQLSTATE 53000)',
    '5s',
  );
  opt(
    '--max-retained-statement-bytes <n>',
    'prepared statement text, described columns and Bind values kept for review/audit, over all sessions for as long ' +
      'as they exist (SQLSTATE 53200 for a Parse beyond; metric pgwarden_retained_statement_bytes)',
    '33554432',
  );
  opt(
    '--insecure-listen-any',
    'accept a --listen address other than loopback: the sidecar then serves anyone who reaches it, with the pod’s workload identity',
  );
  opt(
    '--max-connections <n>',
    "client connections served at once, 0 = no cap (a policy's guardrails.maxConnections may lower it); the next gets FATAL 53300",
    '0',
  );
  opt(
    '--authentication-timeout <duration>',
    "longest a client may take from connecting to a logged-in session (PostgreSQL's authentication_timeout)",
    '60s',
  );
  opt(
    '--grace-period <duration>',
    'on SIGTERM/SIGINT: how long in-flight work may finish before sessions are ended',
    '10s',
  );
  opt('--log-level <level>', 'pino log level (logs go to stderr)', 'info');
  cmd.action(async (o) => {
    const log = pino(
      {
        name: 'pgwarden-sidecar',
        level: o.logLevel,
        redact: { paths: ['password', '*.password', '*.*.password', 'credentials'], censor: '[redacted]' },
      },
      pino.destination(2),
    );
    try {
      await run(o, log, cmd);
    } catch (err) {
      log.error({ err: err instanceof Error ? err.message : String(err) }, 'sidecar failed to start');
      process.exitCode = 1;
      await new Promise((r) => setTimeout(r, 50));
      process.exit(1);
    }
  });
}

async function run(o: Record<string, any>, log: Logger, cmd: Command): Promise<void> {
  const up = o.upstream ? parseUpstream(o.upstream) : undefined;
  let credentials: CredentialsSource | undefined;
  if (o.credentialsDir) credentials = { dir: o.credentialsDir };
  else if (up?.username && up.password !== undefined) {
    log.warn({}, 'credentials taken from --upstream: they are visible in the process list; use --credentials-dir');
    credentials = { username: up.username, password: up.password };
  }
  const maxStatementBytes = o.maxStatementBytes === undefined ? undefined : Number(o.maxStatementBytes);
  if (maxStatementBytes !== undefined && (!Number.isInteger(maxStatementBytes) || maxStatementBytes < 1))
    throw new InvalidArgumentError('--max-statement-bytes must be a positive integer');
  const maxBufferedStatementBytes =
    o.maxBufferedStatementBytes === undefined ? undefined : Number(o.maxBufferedStatementBytes);
  if (
    maxBufferedStatementBytes !== undefined &&
    (!Number.isInteger(maxBufferedStatementBytes) || maxBufferedStatementBytes < 1)
  )
    throw new InvalidArgumentError('--max-buffered-statement-bytes must be a positive integer');
  const maxRetainedStatementBytes = Number(o.maxRetainedStatementBytes);
  if (!Number.isInteger(maxRetainedStatementBytes) || maxRetainedStatementBytes < 1)
    throw new InvalidArgumentError('--max-retained-statement-bytes must be a positive integer');
  const statementStallTimeoutMs = parseGrace(o.statementStallTimeout, '--statement-stall-timeout');
  const catalogQueryTimeoutMs = parseGrace(o.catalogQueryTimeout, '--catalog-query-timeout');
  if (catalogQueryTimeoutMs < 100) throw new InvalidArgumentError('--catalog-query-timeout must be at least 100ms');
  const listenAt = parseHostPort('--listen', o.listen);
  // Design: the sidecar listens on loopback only. In `workload` mode whoever connects *is* the pod, so an address
  // others can reach would hand the pod's identity and credentials to them.
  if (!isLoopbackHost(listenAt.host) && !o.insecureListenAny)
    throw new InvalidArgumentError(
      `--listen ${o.listen} is not a loopback address: anyone who reaches it would act as this pod. Listen on ` +
        '127.0.0.1, or accept that with --insecure-listen-any',
    );
  const maxConnections = Number(o.maxConnections);
  if (!Number.isInteger(maxConnections) || maxConnections < 0)
    throw new InvalidArgumentError('--max-connections must be a non-negative integer');
  const graceMs = parseGrace(o.gracePeriod);
  const authenticationTimeoutMs = parseGrace(o.authenticationTimeout, '--authentication-timeout');
  if (authenticationTimeoutMs < 1000) throw new InvalidArgumentError('--authentication-timeout must be at least 1s');
  const http: { host: string; port: number } | false =
    o.http === 'off' || o.http === 'false' ? false : parseHostPort('--http', o.http);
  const logger: SidecarLogger = log;
  const audit = auditFromFlags(o as AuditFlags, {
    log: (level, msg, err) => log[level]({ err: err instanceof Error ? err.message : err }, msg),
    // The one record of these events that outlives a deleted pod is its log, which the cluster's pipeline keeps.
    onUndelivered: (report, drainingMs) => {
      const msg = undeliveredMessage(report, drainingMs);
      for (const { part, parts, ...undelivered } of undeliveredLogParts(report))
        log[drainingMs === undefined ? 'error' : 'warn']({ undelivered, ...(parts > 1 ? { part, parts } : {}) }, msg);
    },
  });
  if (audit.signingKeyId)
    log.info(
      { keyId: audit.signingKeyId, intervalMs: audit.checkpointIntervalMs },
      'audit chains signed with audit.checkpoint events',
    );
  const common = {
    audit: audit.sink,
    auditRecorder: audit.recorder,
    auditFailMode: audit.failMode,
    http,
    maxStatementBytes,
    maxBufferedStatementBytes,
    maxRetainedStatementBytes,
    statementStallTimeoutMs,
    maxConnections,
    authenticationTimeoutMs,
    logger,
  };
  const upstream = up
    ? {
        host: up.host,
        port: up.port,
        database: up.database,
        sslmode: up.sslmode,
        // Absent unless the URL says so, so that it does not override the policy's database.channelBinding.
        ...(up.channelBinding ? { channelBinding: up.channelBinding } : {}),
        caFile: o.caFile,
      }
    : undefined;
  if (!credentials) throw new InvalidArgumentError('--credentials-dir (or PGWARDEN_CREDENTIALS_DIR) is required');
  let close: (graceMs: number) => Promise<void>;
  if (o.policy) {
    // The policy names the database, listen port and credentials; the flags given explicitly override it.
    const listenGiven = cmd.getOptionValueSource('listen') !== 'default';
    const listen = parseHostPort('--listen', o.listen);
    const governed = await startGovernedSidecar({
      ...common,
      policyPath: o.policy,
      // startGovernedSidecar audits governance events through common.auditRecorder: policy.loaded /
      // policy.rejected / auth.refused in the sidecar's own chain, review holds in their sessions' chains.
      governance: {
        oidc: {
          ...(o.oidcCaFile ? { ca: readFileSync(o.oidcCaFile) } : {}),
          maxTokenLifetimeSeconds: parseLifetime(o.oidcMaxTokenLifetime),
        },
        // Held (`review`) statements wait in the collector's approval queue, over the audit sink's NATS
        // connection; with any other sink nobody can approve and they are denied after approval.timeout.
        approvals: approvalGateForSink(audit.sink, (level, msg, fields) => log[level](fields ?? {}, msg)),
      },
      listenHost: listen.host,
      listenPort: listenGiven ? listen.port : undefined,
      upstream: upstream ? { ...upstream, caFile: o.caFile } : o.caFile ? { caFile: o.caFile } : undefined,
      credentials,
      catalogQueryTimeoutMs,
    });
    for (const l of governed.listeners) audit.exposeMetrics(l.sidecar.metrics.registry);
    close = (g) => governed.close(g);
  } else {
    if (!upstream) throw new InvalidArgumentError('--upstream (or PGWARDEN_UPSTREAM) is required without --policy');
    const sidecar = await startSidecar({
      ...common,
      listen: parseHostPort('--listen', o.listen),
      upstream,
      credentials,
    });
    audit.exposeMetrics(sidecar.metrics.registry);
    close = (g) => sidecar.close(g);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, graceMs }, 'stopping: no new connections, draining sessions');
    await close(graceMs);
    // The recorder's close signs what the last sweep left unsigned (the sidecar's own chain), then closes the sink.
    await audit.recorder.close();
    log.info({}, 'stopped');
    log.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
