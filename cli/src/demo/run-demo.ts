import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AuditSink, startGovernedSidecar, startSidecar } from '@pgwarden/sidecar';
import { formatAuditEvent } from './audit-lines.js';
import { startEmbeddedPostgres } from './embedded-postgres.js';
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

/** Prints each audit event as one line to the terminal. */
function terminalAuditSink(out: NodeJS.WritableStream): AuditSink {
  return {
    emit: (event) => void out.write(`${formatAuditEvent(event)}\n`),
    ready: () => true,
    close: async () => {},
  };
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
  say('pgwarden demo: starting embedded PostgreSQL (PGlite, in memory; takes a few seconds)…');
  // Registered first so a Ctrl-C during startup still stops cleanly; kept (not once) so a second Ctrl-C while
  // stopping does not kill the process half-way.
  let requestStop = () => {};
  const stopRequested = new Promise<void>((resolve) => {
    requestStop = resolve;
  });
  const onSignal = () => requestStop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const embedded = await startEmbeddedPostgres(await kernelPort(HOST));
  const policyDir = opts.policyFiles.length ? mkdtempSync(join(tmpdir(), 'pgwarden-demo-policy-')) : undefined;
  let sidecar: Running | undefined;
  try {
    const port = await firstFreePort(HOST, opts.port);
    const upstream = {
      host: embedded.host,
      port: embedded.port,
      database: embedded.database,
      sslmode: 'disable' as const,
    };
    // PGlite trusts every login; the sidecar still holds the upstream credential, as it does in a pod.
    const credentials = { username: embedded.user, password: 'demo' };
    const audit = terminalAuditSink(opts.out);
    if (policyDir) {
      // A directory of exactly these files: examples/ holds other policies that would each want a listener.
      for (const f of opts.policyFiles) copyFileSync(f, join(policyDir, basename(f)));
      const governed = await startGovernedSidecar({
        policyPath: policyDir,
        listenHost: HOST,
        listenPort: port,
        upstream,
        credentials,
        audit,
        http: false,
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
    say(
      opts.policyFiles.length
        ? `  policy: ${opts.policyFiles.map((f) => basename(f)).join(' + ')}`
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
    say();
    say('  audit events (one line each); Ctrl-C stops');
    say();
    await stopRequested;
    say('pgwarden demo: stopping…');
  } finally {
    await sidecar?.close(2000);
    await embedded.stop();
    if (policyDir) rmSync(policyDir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  say('pgwarden demo: stopped');
}
