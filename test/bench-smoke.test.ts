import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// A one-second version of `make bench` so the benchmark script cannot rot: it starts its own PostgreSQL, nats-server,
// the bare pipe and the built sidecar CLI (`make test` builds first), runs one scenario per leg and writes its JSON.
const repo = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'pgwarden-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function runBench(env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repo, 'bench', 'run.mjs')], {
      env: { ...process.env, ...env },
      cwd: repo,
    });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('make bench (smoke)', () => {
  it('measures direct, bare pipe, sidecar and sidecar-nats with sane numbers', { timeout: 180_000 }, async () => {
    const out = join(dir, 'smoke.json');
    const r = await runBench({
      // A fixed number of transactions per client, not 1 s: under a loaded machine a timed second could end before
      // eight clients finished connecting through a proxy, with zero transactions to measure.
      BENCH_TRANSACTIONS: '150',
      BENCH_REPEATS: '1',
      BENCH_SCENARIOS: 'select-prepared-c8,rows1000-c1',
      BENCH_OUT: out,
    });
    expect(r.code, r.output).toBe(0);
    const result = JSON.parse(readFileSync(out, 'utf8'));
    const legs = result.config.legs.map((l: { name: string }) => l.name);
    expect(legs).toEqual(
      expect.arrayContaining([
        'direct',
        'bare-pipe',
        'proxy-no-audit',
        'sidecar',
        'sidecar-signed',
        'sidecar-nats',
        'sidecar-tls',
      ]),
    );
    // The native reference pipe runs wherever a C compiler does (bench/leg-process.mjs leaves it out, saying why,
    // where none is installed); the 1000-row scenario drives its backpressure path.
    if (spawnSync(process.env.CC ?? 'cc', ['--version']).status === 0) expect(legs).toContain('native-pipe');
    else expect(r.output).toMatch(/leg native-pipe left out: .*apt-get install gcc/);
    expect(result.results).toHaveLength(2 * legs.length);
    for (const row of result.results) {
      expect(row.tps, `${row.scenario} via ${row.leg}`).toBeGreaterThan(0);
      expect(row.runs[0].transactions).toBeGreaterThan(0);
      // Idle share of the whole machine during the run: a fraction, measured for every leg.
      expect(row.machineIdle).toBeGreaterThanOrEqual(0);
      expect(row.machineIdle).toBeLessThanOrEqual(1);
      if (row.leg !== 'direct') {
        expect(row.cpuMicrosPerTx).toBeGreaterThan(0);
        expect(row.systemCpuMicrosPerTx).toBeGreaterThanOrEqual(0);
        expect(row.systemCpuMicrosPerTx).toBeLessThanOrEqual(row.cpuMicrosPerTx);
        expect(row.vsBare).toBeGreaterThan(0);
        expect(row.vsDirect).toBeGreaterThan(0);
      }
    }
    expect(result.peakRssKiB.sidecar).toBeGreaterThan(10 * 1024);
    // Each sidecar audited what it served: at least one event per pgbench transaction of its two runs, in the file
    // or acknowledged by JetStream.
    for (const leg of ['sidecar', 'sidecar-signed', 'sidecar-nats']) {
      const tx = result.results
        .filter((x: any) => x.leg === leg)
        .reduce((n: number, x: any) => n + x.runs[0].transactions, 0);
      expect(result.auditEvents[leg], leg).toBeGreaterThanOrEqual(tx);
    }
    // The signing sidecar signed its chains (at least each session's end), far fewer times than it audited.
    expect(result.auditCheckpoints['sidecar-signed']).toBeGreaterThan(0);
    expect(result.auditCheckpoints['sidecar-signed']).toBeLessThan(result.auditEvents['sidecar-signed'] / 2);
    expect(result.auditCheckpoints.sidecar).toBeUndefined();
    const natsRow = result.results.find((x: any) => x.leg === 'sidecar-nats');
    expect(natsRow.natsServerCpuMicrosPerTx).toBeGreaterThan(0);
    expect(result.machine.nproc).toBeGreaterThan(0);
    // Every target is evaluated (met or not is what the full `make bench` reports; a smoke run says nothing).
    expect(result.targets.map((t: { target: string }) => t.target)).toHaveLength(4);
    for (const t of result.targets) expect(Number.isFinite(t.value)).toBe(true);
    expect(r.output).toMatch(/select-prepared-c8\s+sidecar\s+\d+/);
    // The sidecar's distance from the bare pipe split into proxying and auditing (bench/proxy-no-audit.mjs).
    expect(result.costSplit.map((s: { scenario: string }) => s.scenario)).toEqual(['select-prepared-c8']);
    for (const s of result.costSplit) {
      for (const k of ['proxyVsBare', 'auditVsProxy', 'proxyCpuMicrosPerTx', 'auditCpuMicrosPerTx'])
        expect(Number.isFinite(s[k]), k).toBe(true);
      expect(s.proxyVsBare).toBeGreaterThan(0);
      expect(s.auditVsProxy).toBeGreaterThan(0);
    }
    expect(r.output).toMatch(/cost split select-prepared-c8: proxying \d\.\d\d× bare pipe/);
    expect(r.output).toMatch(/target sidecar-nats ≥ 0\.9× sidecar \(file sink\), select-only -c 8: \d/);
  });
});
