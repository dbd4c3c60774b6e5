import { natsUserFiles } from '@pgwarden/policy';
import type { Registry } from 'prom-client';
import type { AuditSink } from './audit-sink.js';
import type { AuditStreamLimits } from './audit-stream.js';
import type { SpoolFsync } from './disk-spool.js';
import { AuditError } from './errors.js';
import { createFileSink, createStdoutSink } from './line-sinks.js';
import { NatsAuditSink } from './nats-sink.js';
import type { UndeliveredAudit } from './undelivered-events.js';

export interface AuditSinkOptions {
  /** Spool directory for the NATS sink (`--spool-dir`). */
  spoolDir?: string;
  /** Spool size cap in bytes. Default 1 GiB. */
  spoolMaxBytes?: number;
  /** fsync policy of the spool and the file sink. Default batch. */
  fsync?: SpoolFsync;
  /** The file sink's `batch` interval (ms); the spool syncs after each of its batches regardless. */
  fsyncIntervalMs?: number;
  maxQueue?: number;
  maxInFlight?: number;
  publishTimeoutMs?: number;
  stream?: Partial<AuditStreamLimits>;
  /** NATS credentials file (`--audit-nats-creds`). */
  natsCredsFile?: string;
  /** Directory with the NATS `username` and `password` files (`--audit-nats-credentials-dir`). */
  natsCredentialsDir?: string;
  /** CA bundle for TLS to NATS (`--audit-nats-ca`); TLS is also used for `tls://` servers. */
  natsCaFile?: string;
  registry?: Registry;
  log?: (level: 'info' | 'warn' | 'error', msg: string, err?: unknown) => void;
  /** NATS sink: how long its close goes on delivering (`--audit-drain-timeout`). */
  drainTimeoutMs?: number;
  /** NATS sink: what is still undelivered when its close gives up (see NatsSinkOptions). */
  onUndelivered?: (report: UndeliveredAudit, drainingMs?: number) => void;
}

/**
 * Creates a sink from the `--audit` flag: `stdout`, `file:PATH` (JSON lines) or `nats://host:port[,host:port]`
 * (JetStream stream PGWARDEN_AUDIT, spooling to `spoolDir` while NATS is unreachable or slow).
 */
export function createAuditSink(spec: string, options: AuditSinkOptions = {}): AuditSink {
  if (spec === 'stdout') return createStdoutSink();
  if (spec.startsWith('file:')) {
    const path = spec.slice('file:'.length);
    if (!path)
      throw new AuditError('AUDIT_BAD_SPEC', 'file: audit sink needs a path (file:/var/log/pgwarden/audit.jsonl)');
    return createFileSink({
      path,
      fsync: options.fsync,
      syncIntervalMs: options.fsyncIntervalMs,
      registry: options.registry,
      log: options.log,
    });
  }
  if (spec.startsWith('nats://') || spec.startsWith('tls://')) {
    const servers = parseNatsServers(spec);
    return new NatsAuditSink({
      servers,
      spool: options.spoolDir
        ? { dir: options.spoolDir, maxBytes: options.spoolMaxBytes ?? 1024 ** 3, fsync: options.fsync }
        : undefined,
      maxQueue: options.maxQueue,
      maxInFlight: options.maxInFlight,
      publishTimeoutMs: options.publishTimeoutMs,
      stream: options.stream,
      credsFile: options.natsCredsFile,
      userFiles: options.natsCredentialsDir ? natsUserFiles(options.natsCredentialsDir) : undefined,
      tls: options.natsCaFile ? { caFile: options.natsCaFile } : spec.startsWith('tls://') ? {} : undefined,
      registry: options.registry,
      log: options.log,
      drainTimeoutMs: options.drainTimeoutMs,
      onUndelivered: options.onUndelivered,
    });
  }
  throw new AuditError(
    'AUDIT_BAD_SPEC',
    `unsupported --audit sink "${spec}": use stdout, file:PATH or nats://host:port[,host:port]`,
  );
}

/** `nats://a:4222,b:4222` or `nats://a:4222,nats://b:4222` → server URLs (credentials in URLs are not logged). */
export function parseNatsServers(spec: string): string[] {
  const scheme = spec.startsWith('tls://') ? 'tls://' : 'nats://';
  const servers = spec
    .slice(scheme.length)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^[a-z]+:\/\//.test(s) ? s : `${scheme}${s}`));
  if (servers.length === 0) throw new AuditError('AUDIT_BAD_SPEC', 'nats audit sink needs at least one host:port');
  for (const s of servers) {
    try {
      const u = new URL(s);
      if (!u.hostname) throw new Error('no host');
    } catch {
      throw new AuditError('AUDIT_BAD_SPEC', 'invalid NATS server in --audit (expected host:port)');
    }
  }
  return servers;
}
