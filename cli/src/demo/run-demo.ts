import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGovernedSidecar, startSidecar } from '@pgwarden/sidecar';
import { parseAllDocuments, stringify } from 'yaml';
import { formatAuditEvent } from './audit-lines.js';
import { type DemoCollector, startDemoCollector } from './demo-collector.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './embedded-postgres.js';
import { firstFreePort, kernelPort } from './listen-port.js';
import { CUSTOMER_COUNT, ORDER_COUNT } from './seed-sql.js';

export interface DemoOptions {
  /** First port to try for the sidecar (the next nine are tried too). */
  port: number;
  /** Policy and masking files to enforce; empty = allow all. */
  policyFiles: string[];
  out: NodeJS.WritableStream;
}

const HOST = '127.0.0.1';

/** The example read-only analyst policy and PII masking rule, when this checkout has them. */
export function defaultPolicyFiles(): string[] {
  const examples = fileURLToPath(new URL('../../../examples/', import.meta.url));
  const files = ['analyst-readonly.yaml', 'masking-pii.yaml'].map((f) => join(examples, f));
  return files.every((f) => existsSync(f)) ? files : [];
}

interface Running {
  port: number;
  close(graceMs: number): Promise<void>;
}

/**
 * Runs until SIGINT/SIGTERM: embedded PostgreSQL (PGlite) seeded with PII, the sidecar in front of it (governed by
 * the policy files, or allow-all), audit events on the terminal. Resolves once everything has stopped.
 */
export async function runDemo(opts: DemoOptions): Promise<void> {
  const say = (line = '') => opts.out.write(`${line}\n`);
  const started = Date.now();
  say('pgwarden demo: starting embedded PostgreSQL (PGlite, in memory) and the collector; takes a few seconds…');
  // Registered first so a Ctrl-C during startup still stops cleanly; kept (not once) so a second Ctrl-C while
  // stopping does not kill the process half-way.
  let requestStop = () => {};
  const stopRequested = new Promise<void>((resolve) => {
    requestStop = resolve;
  });
  const onSignal = () => requestStop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const workDir = mkdtempSync(join(tmpdir(), 'pgwarden-demo-'));
  const policyDir = opts.policyFiles.length ? join(workDir, 'policy') : undefined;
  let sidecar: Running | undefined;
  let collector: DemoCollector | undefined;
  let embedded: EmbeddedPostgres | undefined;
  try {
    // Started side by side: both are mostly PGlite's WASM start-up.
    const [db, col] = await Promise.allSettled([
      startEmbeddedPostgres(await kernelPort(HOST)),
      startDemoCollector(workDir, (e) => void opts.out.write(`${formatAuditEvent(e)}\n`), say),
    ]);
    if (db.status === 'fulfilled') embedded = db.value;
    if (col.status === 'fulfilled') collector = col.value;
    if (db.status === 'rejected') throw db.reason;
    if (col.status === 'rejected') throw col.reason;
    if (!embedded || !collector) throw new Error('demo start-up failed');
    const port = await firstFreePort(HOST, opts.port);
    const upstream = {
      host: embedded.host,
      port: embedded.port,
      database: embedded.database,
      sslmode: 'disable' as const,
    };
    // PGlite trusts every login; the sidecar still holds the upstream credential, as it does in a pod.
    const credentials = { username: embedded.user, password: 'demo' };
    const audit = collector.sink;
    if (policyDir) {
      mkdirSync(policyDir);
      // A directory of exactly these files: examples/ holds other policies that would each want a listener.
      for (const f of opts.policyFiles) {
        if (collector.approvals) writeFileSync(join(policyDir, basename(f)), withDemoReview(readFileSync(f, 'utf8')));
        else copyFileSync(f, join(policyDir, basename(f)));
      }
      const governed = await startGovernedSidecar({
        policyPath: policyDir,
        listenHost: HOST,
        listenPort: port,
        upstream,
        credentials,
        audit,
        http: false,
        governance: { approvals: collector.approvals?.gate },
      });
      sidecar = { port: governed.listeners[0].sidecar.port, close: (g) => governed.close(g) };
    } else {
      const plain = await startSidecar({ listen: { host: HOST, port }, upstream, credentials, audit, http: false });
      sidecar = { port: plain.port, close: (g) => plain.close(g) };
    }
    const url = `postgres://${embedded.user}@${HOST}:${sidecar.port}/${embedded.database}?sslmode=disable`;
    say();
    say(`  embedded PostgreSQL ${embedded.version} (PGlite) on ${embedded.host}:${embedded.port}`);
    say(
      `    customers (${CUSTOMER_COUNT} rows: email, phone, ssn, card_number, birth_date), orders (${ORDER_COUNT} rows)`,
    );
    say(`  pgwarden sidecar on ${HOST}:${sidecar.port}, ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    say(`  collector (web UI) on ${collector.url}/  sessions: ${collector.url}/api/v1/sessions`);
    say(
      collector.delivery === 'nats'
        ? `    audit events via private nats-server ${collector.natsUrl} (JetStream) → collector`
        : '    audit events delivered in-process to the collector (no nats-server)',
    );
    say(
      opts.policyFiles.length
        ? `  policy: ${opts.policyFiles.map((f) => basename(f)).join(' + ')}${collector.approvals ? ', plus a review rule for UPDATE orders' : ''}`
        : '  policy: none: every statement is allowed and audited (allow-all)',
    );
    say();
    say('  connect with:');
    say(`    psql "${url}"`);
    say('  then try:');
    say('    SELECT full_name, email, phone, ssn, card_number FROM customers LIMIT 5;');
    say(
      '    SELECT c.country, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1;',
    );
    say('    DELETE FROM orders;');
    if (collector.approvals && opts.policyFiles.length) {
      say("    UPDATE orders SET status = 'refunded' WHERE id = 1;   -- held until you approve it, in the web UI");
      say(`      (approver token ${collector.approvals.token}) or from another terminal:`);
      say(
        `      PGWARDEN_COLLECTOR_URL=${collector.url} PGWARDEN_APPROVER_TOKEN=${collector.approvals.token} bin/pgwarden approvals list`,
      );
      say("      approve it --for 15m, and UPDATE orders SET status = 'refunded' WHERE id = 2 runs at once");
    }
    say();
    say('  audit events (one line each); Ctrl-C stops');
    say();
    await stopRequested;
    say('pgwarden demo: stopping…');
  } finally {
    await sidecar?.close(2000);
    await collector?.stop();
    await embedded?.stop();
    rmSync(workDir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  say('pgwarden demo: stopped');
}

/**
 * The demo's policy with one `review` rule added (changing an order's status needs a person's approval, from the
 * group the demo's approver is in), so that `make demo` shows the approval queue. Only with NATS, where the queue
 * runs; the example file itself stays read-only.
 */
export function withDemoReview(yamlText: string): string {
  return parseAllDocuments(yamlText)
    .map((d) => {
      const o = d.toJS() as { kind?: string; spec?: { rules?: unknown[]; approval?: unknown } } | null;
      if (o?.kind !== 'DatabaseAccessPolicy' || !o.spec) return d.toString();
      o.spec.rules = [
        ...(o.spec.rules ?? []),
        { name: 'order-status-needs-review', action: 'review', statements: ['update'], tables: ['public.orders'] },
      ];
      // A grant lets one approval cover the same UPDATE for other orders for a while (docs/collector.md).
      o.spec.approval = { timeout: '5m', approvers: { groups: ['demo-approvers'] }, grants: { maxDuration: '15m' } };
      return stringify(o);
    })
    .join('---\n');
}
