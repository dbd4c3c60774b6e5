import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseChecks, runClient, SIDECAR_KINDS, type SidecarTarget, startSidecarTarget } from './through-sidecar.js';

// pgjdbc from Debian (libpostgresql-jdbc-java, scripts/system-deps.sh) on Java 17: the extended protocol with
// server-side prepared statements after prepareThreshold, pipelined batches, row-limited portals, COPY, cancel.
const harness = inject('pg');
const source = fileURLToPath(new URL('./PgjdbcClient.java', import.meta.url));
const JAR = '/usr/share/java/postgresql.jar';

/** Runs the Java client against `target` and returns its checks by name. */
async function runJava(target: SidecarTarget): Promise<Record<string, any>> {
  const url = `jdbc:postgresql://${target.host}:${target.port}/${target.database}?sslmode=disable`;
  const r = await runClient('java', ['-cp', JAR, source, url, target.user, target.password], { timeoutMs: 45_000 });
  if (r.status !== 0) throw new Error(`pgjdbc client failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return parseChecks(r.stdout);
}

// Through the allow-all sidecar, one started from a policy (through-sidecar.ts SIDECAR_KINDS), and one whose rule
// allows only built-in functions: pgjdbc's own metadata queries must pass a `functions` allowlist of the catalogs.
const BUILTINS_ONLY = {
  defaultAction: 'deny',
  guardrails: { blockDDL: false },
  rules: [{ name: 'built-ins', action: 'allow', functions: ['pg_catalog.*', 'information_schema.*'] }],
};
describe.each([...SIDECAR_KINDS, ['a sidecar allowing only built-in functions', BUILTINS_ONLY] as const])(
  'pgjdbc through %s',
  (_label, policySpec) => {
    let target: SidecarTarget;
    let checks: Record<string, any>;
    beforeAll(async () => {
      target = await startSidecarTarget(harness, { policySpec });
      checks = await runJava(target);
    }, 60_000);
    afterAll(async () => {
      await target?.close();
    });

    it('answers Connection.isValid (an empty query) as valid', () => {
      expect(checks.valid).toMatchObject({ valid: true });
    });

    it('answers DatabaseMetaData: primary key, index, best row identifier, columns', () => {
      expect(checks.metadata).toMatchObject({ columns: 'id,;id,;id,;id,name,;' });
    });

    it('switches to a server-side prepared statement after prepareThreshold', () => {
      expect(checks.prepared).toMatchObject({ sum: 110, serverPrepared: 1 });
    });

    it('runs a pipelined batch, savepoints and a row-limited portal', () => {
      expect(checks.batch.statements).toBe(1000);
      expect(checks.cursor).toMatchObject({ rows: 1001, total: 500500 + 1001, last: 1001 });
    });

    it('copies in and out with CopyManager', () => {
      expect(checks.copy).toMatchObject({ in: 500, out: '1,row 1\n1001,kept\n2500,copied 2500\n' });
    });

    it('reports SQLSTATE and position, and cancels with Statement.cancel (57014)', () => {
      expect(checks.error).toMatchObject({ sqlState: '42P01', position: 15 });
      expect(checks.cancel.sqlState).toBe('57014');
      expect(checks.cancel.ms).toBeLessThan(10_000);
      expect(checks.after.rows).toBe(1501);
    });
  },
);
