import { readFileSync } from 'node:fs';
import type { BlockList } from 'node:net';
import {
  auditSigner,
  controlSubject,
  decisionSigningKey,
  isApprovalId,
  isLoopbackHost,
  natsUserFiles,
  terminateSubject,
} from '@pgwarden/policy';
import pino, { type Logger } from 'pino';
import { ApprovalNotifier } from './approvals/approval-notifier.js';
import {
  type ApprovalNotificationOptions,
  resolveApprovalNotifications,
} from './approvals/approval-notifier-config.js';
import { ApprovalQueue } from './approvals/approval-queue.js';
import { NOTICE_KINDS, NOTIFICATION_OUTCOMES } from './approvals/notification-delivery.js';
import { OidcBearer, type OidcBearerOptions } from './auth/oidc-bearer.js';
import { readAccessFor } from './auth/read-access.js';
import { RefreshTokenSeal } from './auth/refresh-token-seal.js';
import { TokenFile } from './auth/token-file.js';
import { DEFAULT_LIMITS, type SessionLimits, WebSessions } from './auth/web-sessions.js';
import { schemaV1Rules } from './chain/chain-rules.js';
import type { ChainFinding, ChainRules, FullReport } from './chain/verify-chain.js';
import { ControlStream } from './control/control-stream.js';
import { CollectorError } from './errors.js';
import type { AuditEvent } from './event.js';
import { ExportLockSession } from './exports/export-lease.js';
import { type Exporter, ExportRunner } from './exports/export-runner.js';
import { type ApiServer, startApiServer } from './http/api-server.js';
import { trustedProxies } from './http/client-address.js';
import { LiveStream } from './http/live-stream.js';
import { SharedSignInRate } from './http/shared-sign-in-rate.js';
import { signInRateOf } from './http/sign-in-rate.js';
import { WebLogin, type WebLoginOptions } from './http/web-login.js';
import { FileTailSource } from './ingest/file-tail-source.js';
import { type DeliveryOutcome, IngestQueue } from './ingest/ingest-queue.js';
import { JetStreamSource } from './ingest/jetstream-source.js';
import { CollectorMetrics } from './metrics.js';
import { ReadRecorder } from './read-audit/read-recorder.js';
import { watchAuditKeys } from './signatures/audit-keys.js';
import { AuditStore } from './store/audit-store.js';

export interface CollectorOptions {
  /** NATS JetStream source; omit to run without NATS (HTTP ingest and/or file tail only). */
  nats?: { url: string; durable?: string; ackWaitMs?: number; credentialsDir?: string };
  /** PostgreSQL URL, or a PGlite data directory, or neither (PGlite in memory). */
  store?: { url?: string; dataDir?: string };
  /** The API's address; with `tls` (certificate and key files, re-read when they change) it serves HTTPS. */
  http: {
    host?: string;
    port?: number;
    tls?: { certFile: string; keyFile: string; reloadMs?: number };
    /**
     * Host names the API answers to (`Host` header), besides IP addresses, `localhost`, a listen name and
     * `publicUrl`'s name; any other name gets 421, so a DNS-rebinding page cannot read the API. `*` accepts any name.
     */
    allowedHosts?: string[];
    /**
     * Proxies (addresses, CIDR ranges) in front of the API whose `X-Forwarded-For` names the client, for the web
     * sign-in's per-client limits; without them every request counts against its peer address.
     */
    trustedProxies?: string[];
  };
  /**
   * HTTP ingest (POST /api/v1/ingest): on by default when there is no NATS; a token protects it. Without a token it
   * is allowed only on a loopback `http.host`, or with `insecureOpen`.
   */
  httpIngest?: { enabled: boolean; token?: string; insecureOpen?: boolean };
  /** JSON-lines files written by sidecars with `--audit file:PATH`, followed like `tail -F`. */
  tailFiles?: string[];
  /** Days of events to keep; older day partitions are dropped hourly. Unset keeps everything. */
  retentionDays?: number;
  /** How long a hole in a chain may stay open before it is reported as an audit.gap (default 30 s). */
  gapGraceMs?: number;
  exporters?: Exporter[];
  exportStartAt?: 'beginning' | 'now';
  batch?: { maxBatch?: number; maxDelayMs?: number };
  rules?: ChainRules;
  /**
   * The approval queue follows stream PGWARDEN_APPROVALS whenever `nats` is set; its HTTP routes need an approvers
   * file (YAML/JSON list of `{name, groups, tokenSha256}`, re-read when it changes). Without one they answer 501.
   * The same approvers, and the same signing key, serve live control (stream PGWARDEN_CONTROL: terminate, suspend).
   */
  approvals?: {
    approversFile?: string;
    maxEntries?: number;
    /**
     * PEM Ed25519 private key: every decision and control message is signed with it (policies list its public key
     * in decisionKeys).
     */
    signingKeyFile?: string;
  };
  /**
   * A webhook (Slack or JSON) told about each statement held for approval, once across replicas; needs `nats`
   * (docs/collector.md, "Notifications").
   */
  approvalNotifications?: ApprovalNotificationOptions;
  /** The web UI's address as people reach it (e.g. through an ingress): notifications link to it. */
  publicUrl?: string;
  /**
   * Who may read the audit trail over HTTP: the people in `readersFile` (and the approvers). Without a readers file
   * the read routes are open, which is allowed only on a loopback `http.host` or with `insecureOpen`.
   */
  read?: { readersFile?: string; insecureOpen?: boolean };
  /**
   * An identity provider whose OIDC tokens (JWTs) the API takes as bearer tokens besides the static ones: a token
   * verified against the issuer's keys acts as the approvers or readers entry whose `oidc` binding names its holder
   * (docs/collector.md, "Signing in with OIDC"). Needs an approvers or readers file to bind people in.
   */
  oidc?: OidcBearerOptions;
  /**
   * Signed audit checkpoints: `keysFile` (`--audit-keys`, YAML/JSON `{keys: [{name, publicKey, namespaces?}]}`,
   * re-read when it changes) holds the sidecars' public keys; without it checkpoints are stored but not judged.
   * `requireSigned` (needs keysFile) makes verification fail sessions that are not signed (docs/collector.md).
   */
  signatures?: { keysFile?: string; requireSigned?: boolean };
  /**
   * Reads of the trail recorded in the collector's own chain, `collector-<instance>` (the CLI always turns this on):
   * every request to a read route (sessions, events, findings, stream, verify, GET approvals), refusals included, becomes one
   * `audit.read` event stored before the answer is sent. A read whose event is not stored within `timeoutMs`
   * (default 5 s) is refused with 503, unless `failOpen` (`--insecure-unrecorded-reads`) serves it anyway.
   * `signingKeyFile` (`--audit-signing-key`, PEM PKCS#8 Ed25519) signs the chain with `audit.checkpoint` events.
   */
  readAudit?: {
    signingKeyFile?: string;
    failOpen?: boolean;
    timeoutMs?: number;
    checkpointIntervalMs?: number;
    /** Identical reads within this window fold into one `repeated` event (default 60 s; 0: every read its own). */
    repeatWindowMs?: number;
  };
  logger?: Logger;
}

export interface Collector {
  /** Base URL of the HTTP API. */
  url: string;
  store: AuditStore;
  metrics: CollectorMetrics;
  /**
   * In-process ingest (the demo's fallback when there is no NATS): resolves once the event is durably stored,
   * was already stored, or was kept in audit_rejected.
   */
  ingest(event: unknown): Promise<DeliveryOutcome>;
  /** The session id of the collector's own chain of `audit.read` events, when reads are recorded. */
  readAuditSession?: string;
  /** Full re-verification of every (or the given) session's chain from the store. */
  verify(sessionIds?: string[]): Promise<FullReport[]>;
  stop(): Promise<void>;
}

/** Starts store, ingest sources, chain checks, exporters and the HTTP API; `stop()` drains and closes them in order. */
export async function startCollector(opts: CollectorOptions): Promise<Collector> {
  const log = opts.logger ?? pino({ name: 'pgwarden-collector', level: process.env.PGWARDEN_LOG_LEVEL ?? 'info' });
  const metrics = new CollectorMetrics();
  // Read before anything starts: a bad --approvers-file fails the start, not the first request.
  const approvers = opts.approvals?.approversFile
    ? new TokenFile(opts.approvals.approversFile, 'approvers')
    : undefined;
  approvers?.on('loaded', (count) => log.info({ approvers: count }, 'approvers file reloaded'));
  approvers?.on('invalid', (message) => log.error({ err: message }, 'approvers file invalid: refusing every token'));
  // Read before anything starts, like the approvers file: a missing or wrong key fails the start.
  const signingKey = opts.approvals?.signingKeyFile
    ? readKeyFile(opts.approvals.signingKeyFile, 'approvals signing key', decisionSigningKey)
    : undefined;
  const auditSigningKey = opts.readAudit?.signingKeyFile
    ? readKeyFile(opts.readAudit.signingKeyFile, 'audit signing key', auditSigner)
    : undefined;
  // Read before anything starts too: a missing URL file or a URL that is not http(s) fails the start.
  const notifications = opts.approvalNotifications
    ? resolveApprovalNotifications(opts.approvalNotifications, opts.publicUrl)
    : undefined;
  if (notifications && !opts.nats)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      'approval notifications need --nats: held statements arrive there',
    );
  if (notifications?.plainHttpOffLoopback)
    log.warn(
      { webhook: notifications.origin },
      'the approval webhook is plain http: its URL and notices travel unencrypted',
    );
  const readers = opts.read?.readersFile ? new TokenFile(opts.read.readersFile, 'readers') : undefined;
  readers?.on('loaded', (count) => log.info({ readers: count }, 'readers file reloaded'));
  readers?.on('invalid', (message) => log.error({ err: message }, 'readers file invalid: refusing every reader token'));
  // Checked at start-up like the files: a bad issuer URL, audience or algorithm fails the start, not the first login.
  if (opts.oidc && !approvers && !readers)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      'OIDC tokens act as the approvers or readers entries that bind them (oidc): give --approvers-file or --readers-file',
    );
  const oidc = opts.oidc ? new OidcBearer(opts.oidc) : undefined;
  // Checked whether or not the web sign-in uses them: a mistyped proxy fails the start, not the first flood.
  const proxies = trustedProxies(opts.http.trustedProxies);
  const webLoginOptions = oidc && opts.oidc?.webLogin && webLoginOptionsOf(opts.oidc.webLogin, opts.publicUrl, proxies);
  const webSessionLimits = opts.oidc?.webLogin && webSessionLimitsOf(opts.oidc.webLogin);
  const read = readAccessFor({
    host: opts.http.host,
    readers,
    approvers,
    insecureOpen: opts.read?.insecureOpen,
    oidc,
  });
  const httpIngest = opts.httpIngest ?? { enabled: !opts.nats };
  // An empty token would match a request that sends none.
  if (httpIngest.token !== undefined && httpIngest.token.trim() === '')
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      'the HTTP ingest token is empty: put a token in --ingest-token-file',
    );
  // Anyone who reaches an open ingest writes the trail: sessions in anyone's name, chained and hashed as a sidecar's
  // would be (the hash is unkeyed). The agent can reach the collector's address over the pod network.
  if (
    httpIngest.enabled &&
    httpIngest.token === undefined &&
    !httpIngest.insecureOpen &&
    !isLoopbackHost(opts.http.host)
  )
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      `HTTP ingest on ${opts.http.host} would let anyone who reaches it add audit events: give --ingest-token-file, ` +
        'use --nats without --http-ingest, listen on 127.0.0.1, or accept it with --insecure-open-ingest',
    );
  if (httpIngest.enabled && httpIngest.token === undefined && !isLoopbackHost(opts.http.host))
    log.warn(
      { listen: opts.http.host },
      'HTTP ingest takes events from anyone who reaches it (--insecure-open-ingest)',
    );
  if (opts.signatures?.requireSigned && !opts.signatures.keysFile)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      '--require-signed-audit needs --audit-keys: without public keys no checkpoint can be verified',
    );
  // Read before anything starts, like the token files: a bad --audit-keys fails the start.
  const auditKeys = opts.signatures?.keysFile ? watchAuditKeys(opts.signatures.keysFile) : undefined;
  auditKeys?.on('loaded', (ring) => log.info({ auditKeys: ring.keys.map((k) => k.name) }, 'audit keys file reloaded'));
  auditKeys?.on('invalid', (message) =>
    log.error({ err: message }, 'audit keys file invalid: keeping the previous keys until it is fixed'),
  );
  if (auditKeys)
    metrics.auditKeysState = () => {
      const { value, error } = auditKeys.current();
      return { keys: value.keys.length, invalid: error !== undefined };
    };
  if (
    opts.readAudit &&
    !auditSigningKey &&
    opts.signatures?.requireSigned &&
    auditKeys?.current().value.keys.some((k) => k.namespaces === undefined)
  )
    log.warn(
      'without --audit-signing-key the collector’s own chain of audit.read events is unsigned, and ' +
        '--require-signed-audit holds it to signatures like any chain without a namespace: verification will fail it',
    );
  if (read.mode === 'open' && !isLoopbackHost(opts.http.host))
    log.warn({ listen: opts.http.host }, 'the audit API is open to anyone who reaches it (--insecure-open-api)');
  const store = await AuditStore.open({
    url: opts.store?.url,
    dataDir: opts.store?.dataDir,
    rules: opts.rules ?? schemaV1Rules,
    signatures: auditKeys && {
      keyring: () => auditKeys.current().value,
      requireSigned: opts.signatures?.requireSigned,
      graceMs: opts.gapGraceMs ?? 30_000,
    },
  });
  // Sessions and sign-ins in flight live in the store, so that every replica and the next start see them.
  let webLogin: WebLogin | undefined;
  let signInRate: SharedSignInRate | undefined;
  if (oidc && webLoginOptions) {
    const sessions = new WebSessions(store.db, undefined, webSessionLimits);
    signInRate = new SharedSignInRate(store.db, webLoginOptions.rate);
    webLogin = new WebLogin(
      oidc,
      sessions,
      () => [readers, approvers],
      { ...webLoginOptions, limiter: signInRate },
      (o) => {
        // Who and why, never a token.
        if (o.type === 'renewed')
          log.debug({ subject: o.subject, rotated: o.rotated, resealed: o.resealed }, 'web session renewed');
        else log.warn({ subject: o.subject, why: o.why }, 'web session renewal failed, retrying');
      },
    );
    oidc.sessions = webLogin.renewal;
  }
  const queue = new IngestQueue(store, opts.batch);
  const live = new LiveStream();
  // One lock connection for all of this replica's exporters, not one each (export-lease.ts).
  const exportLocks =
    store.db.kind === 'postgres' && opts.exporters?.length ? new ExportLockSession(store.db) : undefined;
  const runners = (opts.exporters ?? []).map(
    (e) =>
      new ExportRunner(store, e, metrics, {
        locks: exportLocks,
        startAt: opts.exportStartAt,
        onError: (name, err) => log.warn({ exporter: name, err: err.message }, 'export failed, retrying'),
        onActive: (name, active, err) =>
          active
            ? log.info({ exporter: name }, 'exporting from this replica')
            : err
              ? log.warn({ exporter: name, err: err.message }, 'export lock lost, standing by')
              : log.info({ exporter: name }, 'stopped exporting'),
      }),
  );

  // The collector's own chain has a queue of its own: a read waits for its event's batch, not for a backlog from
  // NATS. Both write through the same store (whose ingest lock orders their transactions) and report alike.
  const readQueue = opts.readAudit ? new IngestQueue(store, { maxDelayMs: 0 }) : undefined;
  for (const q of readQueue ? [queue, readQueue] : [queue]) {
    q.on('stored', (events, outcome) => {
      // Counted per type first: one labelled increment per type and batch, not one per event.
      const byType = new Map<string, number>();
      for (const e of events) byType.set(e.type, (byType.get(e.type) ?? 0) + 1);
      for (const [type, n] of byType) metrics.ingested.inc({ type }, n);
      metrics.duplicates.inc(outcome.duplicates);
      metrics.healed.inc(outcome.healed);
      live.publish(events);
      for (const r of runners) r.notify();
      forgetAppliedTerminates(events);
    });
    q.on('finding', (f) => {
      metrics.findings.inc({ kind: f.kind });
      live.publishFinding(f);
      log.warn({ finding: f }, 'audit chain finding');
      reads?.finding(f);
    });
    q.on('rejected', (reason) => {
      metrics.rejected.inc();
      log.warn({ reason }, 'audit event rejected');
    });
    q.on('retry', (err, attempt) => {
      metrics.storeRetries.inc();
      log.warn({ err: err.message, attempt }, 'store write failed, retrying');
    });
  }
  const queueGauge = setInterval(() => metrics.queueLength.set(queue.length + (readQueue?.length ?? 0)), 1000);
  queueGauge.unref();

  const nats = opts.nats
    ? new JetStreamSource(queue, {
        url: opts.nats.url,
        durable: opts.nats.durable,
        ackWaitMs: opts.nats.ackWaitMs,
        userFiles: opts.nats.credentialsDir ? natsUserFiles(opts.nats.credentialsDir) : undefined,
        onStatus: (s) => {
          if (s === 'disconnect') metrics.natsConnected.set(0);
          if (s === 'reconnect' || s === 'consuming') metrics.natsConnected.set(1);
          log.info({ nats: s }, 'nats status');
        },
      })
    : null;
  const approvalQueue = opts.nats
    ? new ApprovalQueue({
        url: opts.nats.url,
        userFiles: opts.nats.credentialsDir ? natsUserFiles(opts.nats.credentialsDir) : undefined,
        maxEntries: opts.approvals?.maxEntries,
        signingKey,
      })
    : undefined;
  if (approvalQueue) {
    metrics.countPendingApprovals = () => approvalQueue.book.countPending(Date.now());
    approvalQueue.on('status', (s) => log.info({ approvals: s }, 'approvals status'));
    approvalQueue.on('malformed', (subject) => {
      metrics.approvalsMalformed.inc();
      log.warn({ subject }, 'malformed approval message ignored');
    });
    approvalQueue.on('foreign', (subject) => {
      metrics.approvalsMalformed.inc();
      log.warn({ subject }, "approval message on another namespace's subject than its request's ignored");
    });
    approvalQueue.on('decided', (e) => {
      metrics.approvalDecisions.inc({ decision: e.decision?.decision ?? 'unknown' });
      log.info({ approval: e.id, decision: e.decision?.decision, by: e.decision?.by.name }, 'approval decided');
    });
  }
  const notifier =
    notifications && opts.nats
      ? new ApprovalNotifier({
          ...notifications.notifier,
          nats: {
            url: opts.nats.url,
            userFiles: opts.nats.credentialsDir ? natsUserFiles(opts.nats.credentialsDir) : undefined,
          },
          entryOf: (id) => approvalQueue?.book.get(id, Date.now()),
          closingFits: (id, namespace) => approvalQueue?.book.closingFits(id, namespace) ?? true,
          coveredByGrant: (request) => approvalQueue?.book.grantCovering(request, Date.now()) !== undefined,
          bookLoaded: () => approvalQueue?.ready ?? true,
          appliedSeq: approvalQueue ? () => approvalQueue.appliedSeq : undefined,
        })
      : undefined;
  if (notifier) {
    const kinds = NOTICE_KINDS.filter((k) => k === 'request' || notifications?.notifier.outcomes);
    for (const kind of kinds)
      for (const outcome of NOTIFICATION_OUTCOMES) metrics.approvalNotifications.inc({ kind, outcome }, 0);
    notifier.on('status', (s) => log.info({ approvalNotifier: s }, 'approval notifier status'));
    // The webhook by its origin only: its path may hold a token. Neither the SQL nor the secret is ever logged.
    notifier.on('notified', (outcome, r) => {
      metrics.approvalNotifications.inc({ kind: r.kind, outcome });
      const fields = {
        approval: r.id,
        kind: r.kind,
        attempt: r.attempt,
        webhook: notifications?.origin,
        reason: r.reason,
      };
      if (outcome === 'failed') log.error(fields, 'approval notification failed');
      else if (outcome === 'retried') log.warn({ ...fields, retryInMs: r.delayMs }, 'approval notification retried');
      else log.info(fields, `approval notification ${outcome}`);
    });
  }
  const control = opts.nats
    ? new ControlStream({
        url: opts.nats.url,
        userFiles: opts.nats.credentialsDir ? natsUserFiles(opts.nats.credentialsDir) : undefined,
      })
    : undefined;
  control?.on('status', (s) => log.info({ control: s }, 'control status'));
  // A terminate its sidecar applied is done: its message leaves the stream (one per terminated session otherwise).
  function forgetAppliedTerminates(events: readonly AuditEvent[]): void {
    if (!control) return;
    for (const e of events) {
      const c = e.type === 'control.applied' ? (e.control as { kind?: string; session?: unknown }) : undefined;
      if (c?.kind !== 'terminate' || !isApprovalId(c.session)) continue;
      control
        .forget(terminateSubject(c.session))
        .catch((err: Error) => log.warn({ err: err.message }, 'applied terminate not purged from the control stream'));
    }
  }
  const reads =
    readQueue &&
    new ReadRecorder({
      store: (json) => readQueue.push({ body: json, source: 'collector' }),
      signer: auditSigningKey,
      timeoutMs: opts.readAudit?.timeoutMs,
      checkpointIntervalMs: opts.readAudit?.checkpointIntervalMs,
      repeatWindowMs: opts.readAudit?.repeatWindowMs,
    });
  reads?.on('late', (r, ms) =>
    log.warn({ reader: r.reader, route: r.route, ms }, 'audit.read event stored late: its read had been answered 503'),
  );
  reads?.on('repeatsUnrecorded', (r, repeated, err) => {
    metrics.readsUnrecorded.inc(repeated);
    log.error(
      { reader: r.reader, route: r.route, repeated, err: err.message },
      'audit.read event folding repeated reads not stored: those reads had been answered',
    );
  });
  reads?.on('findingUnrecorded', (f, err) => {
    metrics.findingEventsUnrecorded.inc();
    log.error(
      { finding: f, err: err.message },
      'audit.finding event not stored: the finding is in the findings table only',
    );
  });
  reads?.on('checkpointFailed', (err) => {
    metrics.readCheckpointFailures.inc();
    log.error({ err: err.message }, 'audit.checkpoint of the collector’s chain not stored');
  });
  reads?.on('webSessionUnrecorded', (w, err) => {
    metrics.webSessionEventsUnrecorded.inc();
    log.error(
      { reader: w.reader, subject: w.oidc.subject, reason: w.reason, err: err.message },
      'web.session.end event not stored: the sign-in ended all the same',
    );
  });
  // Each end of a web sign-in, told once across replicas (WebSessions): logged, and recorded in the collector's chain.
  webLogin?.sessions.on('ended', (e) => {
    log.info({ reader: e.entry, subject: e.subject, reason: e.reason, why: e.detail }, 'web session ended');
    reads?.webSessionEnded({
      reader: e.entry,
      oidc: { issuer: e.issuer, subject: e.subject },
      reason: e.reason,
      detail: e.detail,
    });
  });
  const tails = (opts.tailFiles ?? []).map((p) => new FileTailSource(store, queue, p));

  const raised = (f: ChainFinding, message: string) => {
    metrics.findings.inc({ kind: f.kind });
    live.publishFinding(f);
    log.warn({ finding: f }, message);
    reads?.finding(f);
  };
  // Gap events a collector stored without filing their findings (an older version) get them now; retried by the
  // sweep until it has run once.
  let declarationsFiled = false;
  const fileStoredDeclarations = async () => {
    if (declarationsFiled) return;
    for (const f of await store.fileStoredDeclarations()) raised(f, 'audit chain finding of a stored audit.gap');
    declarationsFiled = true;
  };
  await fileStoredDeclarations().catch((err: Error) =>
    log.warn({ err: err.message }, 'filing the findings of stored audit.gap events failed: the sweep retries'),
  );
  const sweepGaps = async () => {
    try {
      await fileStoredDeclarations();
      for (const f of await store.sweepGaps(opts.gapGraceMs ?? 30_000)) raised(f, 'audit chain gap');
      for (const s of await store.sweepInterrupted()) {
        metrics.sessionsInterrupted.inc();
        log.warn(
          { session: s.sessionId, namespace: s.namespace, lastHeard: s.lastHeard },
          'session interrupted: its sidecar stopped naming it without ending it',
        );
      }
      if (opts.retentionDays !== undefined) {
        const dropped = await store.partitions.dropOlderThan(opts.retentionDays);
        if (dropped.length > 0) log.info({ dropped }, 'retention dropped partitions');
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'periodic chain sweep failed');
    }
  };
  const sweepTimer = setInterval(sweepGaps, Math.max(1000, Math.min(60_000, (opts.gapGraceMs ?? 30_000) / 2)));
  sweepTimer.unref();
  // Expired web sessions and sign-ins can no longer be used (every lookup checks expiry); this only reclaims rows.
  const webSweepTimer = setInterval(() => {
    webLogin?.sessions.sweep().catch((err: Error) => log.warn({ err: err.message }, 'web session sweep failed'));
    signInRate?.sweep().catch((err: Error) => log.warn({ err: err.message }, 'sign-in rate sweep failed'));
  }, 60_000);
  webSweepTimer.unref();

  let api: ApiServer;
  try {
    api = await startApiServer(
      {
        store,
        live,
        metrics,
        ingest: httpIngest.enabled ? { queue, token: httpIngest.token } : undefined,
        approvals: { queue: approvalQueue, approvers, oidc },
        control: {
          store,
          stream: control,
          approvers,
          oidc,
          signingKey,
          onAction: (kind, outcome, m) => {
            metrics.controlActions.inc({ kind, outcome });
            if (m) log.info({ control: m.id, kind, by: m.by, subject: controlSubject(m) }, 'control action published');
          },
        },
        onFindingClosed: (f) =>
          log.info(
            { finding: f.id, kind: f.kind, session: f.sessionId, by: f.closed?.by },
            'chain finding closed by hand',
          ),
        read,
        ...(webLogin ? { webLogin } : {}),
        onRead: (r) => log.info(r, 'audit trail read'),
        readAudit: reads && {
          record: (r) => reads.record(r),
          failOpen: opts.readAudit?.failOpen,
          onUnrecorded: (err, r) => {
            metrics.readsUnrecorded.inc();
            log.error(
              {
                err: err.message,
                reader: r.reader,
                route: r.route,
                status: r.status,
                served: Boolean(opts.readAudit?.failOpen),
              },
              'read of the audit trail not recorded',
            );
          },
        },
        auditKeys:
          auditKeys &&
          (() => {
            const { value, error } = auditKeys.current();
            return { keys: value.keys.map((k) => k.name), ...(error ? { error } : {}) };
          }),
        ready: async () => {
          const checks: Record<string, boolean> = {};
          checks.store = await store.db.query('SELECT 1').then(
            () => true,
            () => false,
          );
          if (nats) checks.nats = nats.connected;
          return checks;
        },
      },
      { ...opts.http, publicUrl: opts.publicUrl },
      (message) => log.error({ err: message }, 'TLS certificate change not applied; still serving the previous one'),
    );
  } catch (err) {
    clearInterval(sweepTimer);
    clearInterval(webSweepTimer);
    clearInterval(queueGauge);
    await store.close().catch(() => {});
    throw err;
  }
  nats?.start();
  approvalQueue?.start();
  notifier?.start();
  control?.start();
  for (const t of tails) t.start();
  for (const r of runners) r.start();
  if (opts.retentionDays !== undefined) void sweepGaps();
  log.info(
    {
      url: api.url,
      store: store.db.kind,
      nats: Boolean(nats),
      httpIngest: httpIngest.enabled,
      approvers: approvers ? approvers.path : false,
      approvalWebhook: notifications
        ? {
            origin: notifications.origin,
            format: notifications.notifier.webhook.format,
            outcomes: notifications.notifier.outcomes,
          }
        : false,
      readers: read.mode === 'open' ? 'open' : (readers?.path ?? false),
      oidcIssuer: oidc ? oidc.issuer : false,
      webLogin: webLoginOptions ? { signInRate: webLoginOptions.rate } : false,
      webSessions: webSessionLimits
        ? {
            renew: webSessionLimits.seal !== undefined,
            maxAgeS: webSessionLimits.maxAgeS,
            idleS: webSessionLimits.idleS,
            ...(opts.oidc?.webLogin?.sessionPreviousKeyFiles?.length
              ? { previousKeys: opts.oidc.webLogin.sessionPreviousKeyFiles.length }
              : {}),
          }
        : false,
      auditKeys: auditKeys ? auditKeys.current().value.keys.map((k) => k.name) : false,
      requireSignedAudit: opts.signatures?.requireSigned === true,
      readAudit: reads ? { session: reads.sessionId, signedBy: reads.keyId ?? false } : false,
      exporters: runners.length,
    },
    'collector started',
  );

  let stopping: Promise<void> | null = null;
  return {
    url: api.url,
    store,
    metrics,
    readAuditSession: reads?.sessionId,
    ingest: (event) => queue.push({ body: event, source: 'in-process' }),
    verify: (ids) => store.verify(ids),
    stop: () =>
      (stopping ??= (async () => {
        clearInterval(sweepTimer);
        clearInterval(webSweepTimer);
        clearInterval(queueGauge);
        // First: a webhook that hangs is cut off at once, not waited for.
        await notifier?.close();
        await nats?.stop();
        await approvalQueue?.close();
        await control?.close();
        for (const t of tails) await t.stop();
        // The chain's last checkpoint goes in before its queue drains; a read after this is refused as unrecorded.
        reads?.close();
        await queue.stop();
        await readQueue?.stop();
        await nats?.close();
        for (const r of runners) await r.stop();
        await exportLocks?.close();
        live.close();
        await api.close();
        await store.close();
      })()),
  };
}

/** Reads a private key file before anything starts: a missing or wrong key fails the start, naming the file. */
function readKeyFile<T>(path: string, what: string, parse: (pem: string) => T): T {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      `${what} ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  try {
    return parse(pem);
  } catch (err) {
    // The key's text is never repeated in the message.
    throw new CollectorError('COLLECTOR_BAD_CONFIG', `${what} ${path}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * How long web sessions may last, and the key that seals their refresh tokens, read now: a missing or malformed key
 * fails the start rather than every renewal.
 */
function webSessionLimitsOf(o: NonNullable<OidcBearerOptions['webLogin']>): SessionLimits {
  const maxAgeS = o.sessionMaxAgeS ?? DEFAULT_LIMITS.maxAgeS;
  const idleS = o.sessionIdleS ?? DEFAULT_LIMITS.idleS;
  for (const [flag, v] of [
    ['--web-session-max-age', maxAgeS],
    ['--web-session-idle-timeout', idleS],
  ] as const)
    if (!Number.isFinite(v) || v < 1 || v > 30 * 86_400)
      throw new CollectorError('COLLECTOR_BAD_CONFIG', `${flag} must be between 1s and 30 days`);
  if (o.sessionPreviousKeyFiles?.length && !o.sessionKeyFile)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      '--web-session-previous-key-file only opens what --web-session-key-file sealed: it needs --web-session-key-file',
    );
  return {
    maxAgeS,
    idleS,
    ...(o.sessionKeyFile
      ? { seal: RefreshTokenSeal.fromFiles(o.sessionKeyFile, o.sessionPreviousKeyFiles ?? []) }
      : {}),
  };
}

/** The web UI's sign-in: its secret read now (a missing file fails the start), redirects to the public URL. */
function webLoginOptionsOf(
  o: NonNullable<OidcBearerOptions['webLogin']>,
  publicUrl: string | undefined,
  trusted: BlockList | undefined,
): WebLoginOptions {
  if (!publicUrl)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      'the web sign-in (--oidc-client-id) needs --public-url: the identity provider redirects browsers back to it',
    );
  let clientSecret: string | undefined;
  if (o.clientSecretFile) {
    try {
      clientSecret = readFileSync(o.clientSecretFile, 'utf8').trim();
    } catch (err) {
      throw new CollectorError(
        'COLLECTOR_BAD_CONFIG',
        `OIDC client secret file ${o.clientSecretFile}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`,
      );
    }
    if (!clientSecret)
      throw new CollectorError('COLLECTOR_BAD_CONFIG', `OIDC client secret file ${o.clientSecretFile} is empty`);
  }
  return {
    clientId: o.clientId,
    publicUrl,
    ...(clientSecret !== undefined ? { clientSecret } : {}),
    rate: signInRateOf(o.rate),
    ...(trusted ? { trustedProxies: trusted } : {}),
    ...(o.offlineAccess ? { offlineAccess: true } : {}),
  };
}
