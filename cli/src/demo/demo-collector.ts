import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Collector, startCollector } from '@pgwarden/collector';
import { type ApprovalGate, type AuditSink, approvalGateForSink, createAuditSink } from '@pgwarden/sidecar';
import pino from 'pino';
import { findNatsServer, type PrivateNats, startPrivateNats } from './private-nats.js';
import { seedStoreDir } from './store-template.js';

export const NATS_MISSING_NOTE =
  'nats-server not found: install it with `apt-get install nats-server` (or brew install nats-server); ' +
  'using direct in-process delivery';

export interface DemoCollector {
  /** Base URL of the collector's web UI and API. */
  url: string;
  /** How the sidecar's events reach the collector. */
  delivery: 'nats' | 'in-process';
  natsUrl?: string;
  /** What the sidecar writes its audit events to: the terminal line plus delivery to the collector. */
  sink: AuditSink;
  /**
   * With NATS: where the sidecar holds `review` statements (the collector's approval queue), and the token of the
   * demo's one approver ("you", group demo-approvers), made for this run.
   */
  approvals?: { gate: ApprovalGate; token: string };
  /** Flushes the sink, then stops the collector and the private nats-server. */
  stop(): Promise<void>;
}

/**
 * The collector for `pgwarden demo`. Its store is a PGlite data directory under `workDir` rather than a second
 * in-memory PGlite (FACTS: ~720 MB each) and not a schema in the demo database: that one is served through
 * pglite-socket, which runs every client in one PostgreSQL session, so the analyst's SET ROLE and its transactions
 * would leak into the collector's. With nats-server the events go through a private JetStream (as in production);
 * without it they are handed to `collector.ingest` in-process.
 */
export async function startDemoCollector(
  workDir: string,
  onEvent: (event: Record<string, unknown>) => void,
  say: (line: string) => void,
): Promise<DemoCollector> {
  const bin = findNatsServer();
  if (!bin) say(NATS_MISSING_NOTE);
  let nats: PrivateNats | undefined;
  let collector: Collector | undefined;
  // A fresh token per run, printed for the person trying the demo; the file keeps only its hash, as in production.
  const token = randomBytes(12).toString('hex');
  const approversFile = join(workDir, 'approvers.yaml');
  writeFileSync(
    approversFile,
    `- {name: you, groups: [demo-approvers], tokenSha256: ${createHash('sha256').update(token).digest('hex')}}\n`,
  );
  try {
    const storeDir = join(workDir, 'collector-store');
    // Settled, not Promise.all: a nats-server that started must be stopped even when the store seeding failed.
    const [n, seeded] = await Promise.allSettled([
      bin ? startPrivateNats(bin, mkdir(join(workDir, 'jetstream'))) : undefined,
      seedStoreDir(storeDir),
    ]);
    if (n.status === 'fulfilled') nats = n.value;
    if (n.status === 'rejected') throw n.reason;
    if (seeded.status === 'rejected') throw seeded.reason;
    collector = await startCollector({
      nats: nats ? { url: nats.url, durable: 'pgwarden-demo' } : undefined,
      store: { dataDir: storeDir },
      http: { host: '127.0.0.1', port: 0 },
      httpIngest: { enabled: !nats },
      approvals: { approversFile },
      // Reads of the trail are audited as in `pgwarden collector`: the web UI's own reads show up as the
      // collector-<instance> session.
      readAudit: {},
      // Warnings only, on stderr: the terminal is for the audit lines.
      logger: pino(
        { name: 'pgwarden-collector', level: process.env.PGWARDEN_LOG_LEVEL ?? 'warn' },
        pino.destination(2),
      ),
    });
  } catch (err) {
    await collector?.stop().catch(() => {});
    await nats?.stop();
    throw err;
  }
  const c = collector;
  const natsSink = nats ? createAuditSink(nats.url, { spoolDir: join(workDir, 'spool') }) : undefined;
  const delivery = natsSink ? natsDelivery(natsSink, onEvent) : inProcessDelivery(c, onEvent, (msg) => say(msg));
  const gate = natsSink ? approvalGateForSink(natsSink) : undefined;
  let stopped: Promise<void> | undefined;
  return {
    url: c.url,
    delivery: nats ? 'nats' : 'in-process',
    natsUrl: nats?.url,
    sink: delivery,
    ...(gate ? { approvals: { gate, token } } : {}),
    stop: () =>
      (stopped ??= (async () => {
        await delivery.close();
        // Give the collector a moment to pull what was just published before it stops consuming.
        if (nats) await new Promise((r) => setTimeout(r, 300));
        await c.stop();
        await nats?.stop();
      })()),
  };
}

function mkdir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The production path: the NATS sink (spooling to disk while NATS is not reachable yet), plus the terminal line. */
function natsDelivery(nats: AuditSink, onEvent: (e: Record<string, unknown>) => void): AuditSink {
  return {
    emit(event) {
      onEvent(event);
      nats.emit(event);
    },
    ready: () => nats.ready(),
    close: () => nats.close(),
    onGap: (l) => nats.onGap?.(l),
    stats: () => nats.stats?.() ?? { kind: 'nats', queued: 0, published: 0, dropped: 0 },
    whenIdle: (ms) => nats.whenIdle?.(ms) ?? Promise.resolve(),
  };
}

/** The fallback: each event goes straight into the collector's ingest queue; close() waits for them to be stored. */
function inProcessDelivery(
  collector: Collector,
  onEvent: (e: Record<string, unknown>) => void,
  warn: (msg: string) => void,
): AuditSink {
  const pending = new Set<Promise<unknown>>();
  const idle = async () => {
    while (pending.size > 0) await Promise.allSettled([...pending]);
  };
  return {
    emit(event) {
      onEvent(event);
      const p = collector.ingest(event).then(
        () => {},
        (err: Error) => {
          warn(`collector ingest failed: ${err.message}`);
        },
      );
      pending.add(p);
      void p.finally(() => pending.delete(p));
    },
    ready: () => true,
    close: idle,
    whenIdle: idle,
  };
}
