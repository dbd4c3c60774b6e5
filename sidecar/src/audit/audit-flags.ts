import { readFileSync } from 'node:fs';
import { type AuditSigner, auditSigner } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { WORKLOAD_ENV } from '../identity/workload.js';
import { AUDIT_METRIC_NAMES, auditMetrics } from './audit-metrics.js';
import { type AuditRecorder, type AuditRecorderOptions, createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';
import { createAuditSink } from './create-audit-sink.js';
import type { SpoolFsync } from './disk-spool.js';
import { AuditError } from './errors.js';
import type { UndeliveredAudit } from './undelivered-events.js';
import type { AuditFailMode } from './with-audit.js';

/** The `pgwarden sidecar` audit flags, as commander hands them over (all strings). */
export interface AuditFlags {
  audit?: string;
  spoolDir?: string;
  spoolMaxBytes?: string;
  auditFailMode?: string;
  auditFsync?: string;
  auditStreamMaxAge?: string;
  auditStreamMaxBytes?: string;
  auditDuplicateWindow?: string;
  auditNatsCreds?: string;
  auditNatsCredentialsDir?: string;
  auditNatsCa?: string;
  auditSigningKey?: string;
  auditCheckpointInterval?: string;
  auditHeadsRefresh?: string;
  auditDrainTimeout?: string;
}

/** [flags, description, default] for each audit option; the sidecar command registers them with `.option(...)`. */
export const AUDIT_CLI_OPTIONS: [string, string, string | undefined][] = [
  ['--audit <sink>', 'audit sink: stdout | file:PATH | nats://host:port[,host:port]', 'stdout'],
  ['--spool-dir <dir>', 'disk spool for the NATS sink while NATS is unreachable or slow', undefined],
  ['--spool-max-bytes <size>', 'spool size cap (e.g. 512MiB, 2GiB)', '1GiB'],
  [
    '--audit-fail-mode <mode>',
    'closed: deny statements (SQLSTATE 53000) while events cannot be made durable; open: serve and count drops',
    'closed',
  ],
  [
    '--audit-fsync <policy>',
    'fdatasync of spool/file writes: batch | batch:<interval> (file sink, 1ms–10s; batch = batch:5ms) | always | never',
    'batch',
  ],
  [
    '--audit-stream-max-age <duration>',
    'PGWARDEN_AUDIT stream max age when the sidecar creates it (e.g. 30d, 0 = forever)',
    '30d',
  ],
  ['--audit-stream-max-bytes <size>', 'PGWARDEN_AUDIT stream size cap (-1 = unlimited)', '-1'],
  ['--audit-duplicate-window <duration>', 'JetStream duplicate window (at least 2m)', '2m'],
  ['--audit-nats-creds <file>', 'NATS credentials file (JWT + seed) for the audit sink', undefined],
  [
    '--audit-nats-credentials-dir <dir>',
    'directory with files username and password: the NATS user for the audit sink (re-read at each connect)',
    undefined,
  ],
  ['--audit-nats-ca <file>', 'PEM CA bundle: connect to NATS over TLS and verify it with this CA', undefined],
  [
    '--audit-signing-key <file>',
    'Ed25519 private key (PEM PKCS#8, `pgwarden audit keygen`): sign each audit chain with audit.checkpoint events',
    undefined,
  ],
  [
    '--audit-checkpoint-interval <duration>',
    'how often the sidecar chain records the heads of the session chains (audit.heads) and, with --audit-signing-key, the longest time events stay unsigned (10ms–1h)',
    '1s',
  ],
  [
    '--audit-drain-timeout <duration>',
    'on shutdown: how long the NATS sink goes on delivering undelivered events (NATS may come back) before it exits, naming what is left in the spool in an error log line (0s–10m)',
    '15s',
  ],
  [
    '--audit-heads-refresh <duration>',
    'how often each open session chain is named in audit.heads even when idle; the collector reads a session not named for three such periods as interrupted (1s–1h)',
    '1m',
  ],
];

export interface AuditSetup {
  sink: AuditSink;
  recorder: AuditRecorder;
  failMode: AuditFailMode;
  /** Key id (ed25519KeyId) of the --audit-signing-key, when the chains are signed; the key itself is not kept here. */
  signingKeyId?: string;
  checkpointIntervalMs: number;
  /** Holds the audit metrics; register its metrics on the admin server's registry. */
  registry: Registry;
  /** Adds the audit metrics to another registry (e.g. the sidecar's /metrics). */
  exposeMetrics(target: Registry): void;
}

const SIZE = /^(-?\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)$/i;
const UNIT: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

export function parseSize(s: string, flag: string): number {
  const m = SIZE.exec(s.trim());
  if (!m) throw new AuditError('AUDIT_BAD_SPEC', `${flag}: "${s}" is not a size (e.g. 512MiB, 2GiB)`);
  return Math.floor(Number(m[1]) * UNIT[m[2].toLowerCase().charAt(0)]);
}

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(s: string, flag: string): number {
  const m = DURATION.exec(s.trim());
  if (!m) throw new AuditError('AUDIT_BAD_SPEC', `${flag}: "${s}" is not a duration (e.g. 90s, 2m, 30d)`);
  return Math.round(Number(m[1]) * MS[m[2] ?? 's']);
}

const FSYNC_INTERVAL_MS = { min: 1, max: 10_000 };
const CHECKPOINT_INTERVAL_MS = { min: 10, max: 3_600_000 };

/** The checkpoint signer of `--audit-signing-key`; refusals name the file and why (auditSigner never quotes it). */
export function loadAuditSigner(file: string): AuditSigner {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new AuditError('AUDIT_BAD_SPEC', `--audit-signing-key ${file}: cannot read it (${code})`);
  }
  try {
    return auditSigner(pem);
  } catch (err) {
    throw new AuditError('AUDIT_BAD_SPEC', `--audit-signing-key ${file}: ${(err as Error).message}`);
  }
}

/** `--audit-heads-refresh`: a duration from 1s to 1h. */
export function parseHeadsRefresh(value: string): number {
  const ms = parseDuration(value, '--audit-heads-refresh');
  if (!(ms >= 1000 && ms <= 3_600_000)) {
    throw new AuditError(
      'AUDIT_BAD_SPEC',
      `--audit-heads-refresh takes a duration from 1s to 1h (e.g. 1m), not "${value}"`,
    );
  }
  return ms;
}

/** `--audit-drain-timeout`: a duration from 0 to 10m. */
export function parseDrainTimeout(value: string): number {
  const ms = parseDuration(value, '--audit-drain-timeout');
  if (!(ms <= 600_000)) {
    throw new AuditError(
      'AUDIT_BAD_SPEC',
      `--audit-drain-timeout takes a duration from 0s to 10m (e.g. 15s), not "${value}"`,
    );
  }
  return ms;
}

/** `--audit-checkpoint-interval`: a duration from 10ms to 1h. */
export function parseCheckpointInterval(value: string): number {
  const ms = parseDuration(value, '--audit-checkpoint-interval');
  if (!(ms >= CHECKPOINT_INTERVAL_MS.min && ms <= CHECKPOINT_INTERVAL_MS.max)) {
    throw new AuditError(
      'AUDIT_BAD_SPEC',
      `--audit-checkpoint-interval takes a duration from 10ms to 1h (e.g. 1s), not "${value}"`,
    );
  }
  return ms;
}

/**
 * `--audit-fsync`: batch | batch:<interval> | always | never. The interval is the file sink's least time between two
 * fdatasyncs, i.e. how many milliseconds of events a power loss may take with it; a plain `batch` keeps the default.
 */
export function parseFsync(value: string): { fsync: SpoolFsync; intervalMs?: number } {
  if (value === 'batch' || value === 'always' || value === 'never') return { fsync: value };
  if (!value.startsWith('batch:')) {
    throw new AuditError(
      'AUDIT_BAD_SPEC',
      `--audit-fsync must be batch, batch:<interval>, always or never, not "${value}"`,
    );
  }
  // The unit is required: a bare number would read as seconds (parseDuration), a thousand times what `5` suggests.
  const m = /^batch:(\d+(?:\.\d+)?)(ms|s)$/.exec(value);
  const intervalMs = m ? Math.round(Number(m[1]) * (m[2] === 's' ? 1000 : 1)) : Number.NaN;
  if (!(intervalMs >= FSYNC_INTERVAL_MS.min && intervalMs <= FSYNC_INTERVAL_MS.max)) {
    throw new AuditError(
      'AUDIT_BAD_SPEC',
      `--audit-fsync batch:<interval> takes a duration from 1ms to 10s (e.g. batch:20ms), not "${value.slice(6)}"`,
    );
  }
  return { fsync: 'batch', intervalMs };
}

/** Builds the sink, the process-wide recorder and the fail mode from the sidecar's flags. */
export function auditFromFlags(
  flags: AuditFlags,
  ctx: Omit<AuditRecorderOptions, 'now'> & {
    log?: (level: 'info' | 'warn' | 'error', msg: string, err?: unknown) => void;
    /** What the NATS sink leaves undelivered at shutdown (see NatsSinkOptions.onUndelivered). */
    onUndelivered?: (report: UndeliveredAudit, drainingMs?: number) => void;
  } = {},
): AuditSetup {
  const failMode = (flags.auditFailMode ?? 'closed') as AuditFailMode;
  if (failMode !== 'closed' && failMode !== 'open') {
    throw new AuditError('AUDIT_BAD_SPEC', `--audit-fail-mode must be closed or open, not "${flags.auditFailMode}"`);
  }
  const { fsync, intervalMs: fsyncIntervalMs } = parseFsync(flags.auditFsync ?? 'batch');
  const checkpointIntervalMs = flags.auditCheckpointInterval
    ? parseCheckpointInterval(flags.auditCheckpointInterval)
    : (ctx.checkpointIntervalMs ?? 1000);
  const drainTimeoutMs = flags.auditDrainTimeout ? parseDrainTimeout(flags.auditDrainTimeout) : undefined;
  const headsRefreshMs = flags.auditHeadsRefresh ? parseHeadsRefresh(flags.auditHeadsRefresh) : ctx.headsRefreshMs;
  // Before the sink exists: a bad key refuses the start without a file opened or a NATS connection made.
  const signer = flags.auditSigningKey ? loadAuditSigner(flags.auditSigningKey) : ctx.signer;
  const spec = flags.audit ?? 'stdout';
  if (spec.startsWith('nats') && !flags.spoolDir && failMode === 'closed') {
    ctx.log?.('warn', 'audit: NATS sink without --spool-dir: statements are denied whenever NATS is unreachable');
  }
  const registry = new Registry();
  auditMetrics(registry);
  const sink = createAuditSink(spec, {
    spoolDir: flags.spoolDir,
    spoolMaxBytes: flags.spoolMaxBytes ? parseSize(flags.spoolMaxBytes, '--spool-max-bytes') : undefined,
    fsync,
    fsyncIntervalMs,
    stream: {
      ...(flags.auditStreamMaxAge
        ? { maxAgeMs: parseDuration(flags.auditStreamMaxAge, '--audit-stream-max-age') }
        : {}),
      ...(flags.auditStreamMaxBytes
        ? { maxBytes: parseSize(flags.auditStreamMaxBytes, '--audit-stream-max-bytes') }
        : {}),
      ...(flags.auditDuplicateWindow
        ? { duplicateWindowMs: parseDuration(flags.auditDuplicateWindow, '--audit-duplicate-window') }
        : {}),
    },
    natsCredsFile: flags.auditNatsCreds,
    natsCredentialsDir: flags.auditNatsCredentialsDir,
    natsCaFile: flags.auditNatsCa,
    registry,
    log: ctx.log,
    drainTimeoutMs,
    onUndelivered: ctx.onUndelivered,
  });
  const env = process.env;
  const source = ctx.source ?? {
    // The sidecar's own workload, from the downward API (see identity/workload.ts).
    pod: env[WORKLOAD_ENV.pod],
    namespace: env[WORKLOAD_ENV.namespace],
    node: env[WORKLOAD_ENV.node],
  };
  const recorder = createAuditRecorder(sink, { ...ctx, source, signer, checkpointIntervalMs, headsRefreshMs });
  return {
    sink,
    recorder,
    failMode,
    ...(signer ? { signingKeyId: signer.keyId } : {}),
    checkpointIntervalMs,
    registry,
    exposeMetrics(target) {
      for (const name of AUDIT_METRIC_NAMES) {
        const m = registry.getSingleMetric(name);
        if (m && !target.getSingleMetric(name)) target.registerMetric(m);
      }
    },
  };
}
