#!/usr/bin/env node
// Masking overhead on the 1000-row query (rows1000.sql), sidecar in-process: the same policy without and with a
// MaskingRule on 2 of the 4 columns, interleaved. Prints tps and the masked/unmasked ratio (target ≥ 0.6).
// Needs `make build` (imports sidecar/dist). Env: BENCH_SECONDS (default 5), BENCH_REPEATS (default 3).
import { fileURLToPath } from 'node:url';
import { startGovernedSidecar } from '../sidecar/dist/governance/index.js';
import { initPgbench, runPgbench } from './pgbench.mjs';
import { BENCH_ROLE, startBenchPostgres } from './postgres.mjs';
import { median } from './report.mjs';

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const repeats = Number(process.env.BENCH_REPEATS ?? 3);
const here = (f) => fileURLToPath(new URL(f, import.meta.url));
const ROWS_1000 = here('./rows1000.sql');
const quiet = { emit() {}, ready: () => true, close: async () => {} };

const pg = await startBenchPostgres();
const legs = [];
try {
  await initPgbench({ ...pg, user: BENCH_ROLE.user, password: BENCH_ROLE.password }, 1);
  const upstream = { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' };
  const credentials = { username: BENCH_ROLE.user, password: BENCH_ROLE.password };
  for (const [name, file] of [
    ['policy', 'policy-plain.yaml'],
    ['masked', 'policy-masked.yaml'],
  ]) {
    const gs = await startGovernedSidecar({
      policyPath: here(`./${file}`),
      listenPort: 0,
      upstream,
      credentials,
      audit: quiet,
      statementEvents: false,
      http: false,
      pollMs: 0,
    });
    legs.push({ name, gs, port: gs.listeners[0].sidecar.port, tps: [], cpu: [] });
  }
  for (const clients of [1, 8]) {
    for (const l of legs) {
      l.tps = [];
      l.cpu = [];
    }
    for (let r = 0; r < repeats; r++) {
      for (const l of r % 2 ? [...legs].reverse() : legs) {
        const before = process.cpuUsage();
        const res = await runPgbench(
          {
            host: '127.0.0.1',
            port: l.port,
            user: BENCH_ROLE.user,
            password: BENCH_ROLE.password,
            database: pg.database,
          },
          ['-f', ROWS_1000, '-M', 'extended', '-c', String(clients), '-j', String(Math.min(clients, 2))],
          seconds,
        );
        if (res.failed > 0) throw new Error(`${l.name}: ${res.failed} failed transactions`);
        const used = process.cpuUsage(before);
        l.tps.push(res.tps);
        // CPU of this process (both sidecars; only one is busy at a time) per transaction: robust to machine load.
        l.cpu.push((used.user + used.system) / res.transactions);
      }
    }
    const [plain, masked] = legs.map((l) => median(l.tps));
    const [cpuPlain, cpuMasked] = legs.map((l) => median(l.cpu));
    console.log(
      `rows1000 c${clients}: policy ${plain.toFixed(0)} tps ${cpuPlain.toFixed(0)} µs CPU/tx, masked ${masked.toFixed(0)} tps ${cpuMasked.toFixed(0)} µs CPU/tx; tps ratio ${(masked / plain).toFixed(2)}, CPU ratio ${(cpuPlain / cpuMasked).toFixed(2)} (tps runs: ${legs.map((l) => `${l.name} ${l.tps.map((t) => t.toFixed(0)).join('/')}`).join(', ')})`,
    );
  }
} finally {
  await Promise.allSettled(legs.map((l) => l.gs.close(0)));
  pg.stop();
}
