#!/usr/bin/env node
// `make bench`: pgbench directly, through a bare Node.js byte pipe, and through the sidecar, interleaved.
// Env: BENCH_SECONDS (per run, default 10), BENCH_REPEATS (default 2), BENCH_SCENARIOS (comma list, default all),
// BENCH_LEGS (comma list, default all), BENCH_OUT (default bench/results/latest.json), BENCH_TRANSACTIONS (per client,
// instead of BENCH_SECONDS: the smoke test's fixed amount of work).
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLeg } from './leg-process.mjs';
import { BASELINE_PROXY, LEGS, SCENARIOS } from './legs.mjs';
import { startBenchNats } from './nats-server.mjs';
import { initPgbench, runPgbench } from './pgbench.mjs';
import { BENCH_ROLE, startBenchPostgres } from './postgres.mjs';
import { cpuMicros, cpuTimes, machineTicks, peakRssKiB, preciseCpuMicros, rssKiB } from './proc-stats.mjs';
import { costSplit, formatCostSplit, formatTable, machine, summarise, targets } from './report.mjs';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
// Transactions per client instead of a duration (the smoke test's setting; see runPgbench).
const transactions = process.env.BENCH_TRANSACTIONS ? Number(process.env.BENCH_TRANSACTIONS) : undefined;
const repeats = Number(process.env.BENCH_REPEATS ?? 2);
const pick = (all, env) => {
  if (!env) return all;
  const names = env.split(',').map((s) => s.trim());
  const unknown = names.filter((n) => !all.some((x) => x.name === n));
  if (unknown.length) throw new Error(`unknown: ${unknown.join(', ')} (have ${all.map((x) => x.name).join(', ')})`);
  return all.filter((x) => names.includes(x.name));
};
const scenarios = pick(SCENARIOS, process.env.BENCH_SCENARIOS);
let legs = pick(LEGS, process.env.BENCH_LEGS);
const outFile = process.env.BENCH_OUT ?? fileURLToPath(new URL('./results/latest.json', import.meta.url));

const workDir = mkdtempSync(join(tmpdir(), 'pgwarden-bench-run-'));
const started = [];
let pg;
let nats;
// nats-server starts while initdb runs (which blocks this process); held here so a failure before it is awaited
// still stops it.
let natsStarting;
const cleanup = async () => {
  await Promise.allSettled(started.map((l) => l.stop()));
  nats ??= await natsStarting?.catch(() => undefined);
  await nats?.stop();
  pg?.stop();
  rmSync(workDir, { recursive: true, force: true });
};
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup().finally(() => process.exit(130));
  });
}

try {
  const startedAt = new Date().toISOString();
  if (legs.some((l) => l.audit === 'nats')) {
    natsStarting = startBenchNats();
    natsStarting.catch(() => {}); // awaited below; an early failure is not an unhandled rejection meanwhile
  }
  pg = await startBenchPostgres();
  const target = (l) => ({
    host: l.host,
    port: l.port,
    user: BENCH_ROLE.user,
    password: BENCH_ROLE.password,
    database: pg.database,
  });
  await initPgbench({ ...pg, user: BENCH_ROLE.user, password: BENCH_ROLE.password }, 1);
  nats = await natsStarting;
  // Side by side: each leg's start is mostly a Node.js process loading its modules, and nothing is measured until
  // every leg listens (one after another they took ~12 s of the smoke test's ~38 s).
  const starts = await Promise.allSettled(legs.map((leg) => startLeg(leg, pg, BENCH_ROLE, workDir, nats)));
  for (const s of starts) {
    if (s.status === 'rejected') continue;
    if (s.value.skipped) log(`leg ${s.value.name} left out: ${s.value.skipped}`);
    else started.push(s.value);
  }
  const failed = starts.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  legs = legs.filter((leg) => started.some((l) => l.name === leg.name));
  log(`PostgreSQL ${pg.version} on :${pg.port}; legs ${started.map((l) => `${l.name}:${l.port}`).join(' ')}`);
  log(
    `${scenarios.length} scenarios × ${legs.length} legs × ${repeats} repeats × ${transactions ? `${transactions} tx/client` : `${seconds} s`}`,
  );

  const runs = [];
  for (const scenario of scenarios) {
    for (let rep = 0; rep < repeats; rep++) {
      // Round-robin within a scenario so drift in machine load spreads over every leg alike.
      for (const leg of rep % 2 ? [...started].reverse() : started) {
        if (leg.exited)
          throw new Error(`leg ${leg.name} exited before ${scenario.name}; its last output:\n${leg.log()}`);
        const before = leg.pid ? cpuTimes(leg.pid) : undefined;
        const preciseBefore = leg.pid ? preciseCpuMicros(leg.pid) : undefined;
        // The NATS leg also makes nats-server work, on the same cores: counted apart, not hidden.
        const natsBefore = leg.auditNats ? [preciseCpuMicros(nats.pid), cpuMicros(nats.pid)] : undefined;
        const machineBefore = machineTicks();
        const r = await runPgbench(target(leg), scenario.pgbench, seconds, transactions);
        const machineAfter = machineTicks();
        const after = leg.pid ? cpuTimes(leg.pid) : undefined;
        const ticks = after ? after.user + after.system - before.user - before.system : undefined;
        // A short run of a cheap leg (the smoke test's 150 transactions through the native pipe) can stay under one
        // 10 ms clock tick: then the per-thread nanoseconds say what it used, rather than 0.
        const cpu = ticks === 0 ? Math.max(0, preciseCpuMicros(leg.pid) - preciseBefore) : ticks;
        const systemCpu = after ? Math.min(after.system - before.system, cpu) : undefined;
        // Per-thread nanoseconds; if a thread exited mid-run its time vanished from the sum, so take the coarse
        // (whole-process, 10 ms ticks) figure instead.
        const natsPrecise = leg.auditNats ? preciseCpuMicros(nats.pid) - natsBefore[0] : undefined;
        const natsCpu = leg.auditNats
          ? natsPrecise >= 0
            ? natsPrecise
            : cpuMicros(nats.pid) - natsBefore[1]
          : undefined;
        const machineIdle =
          (machineAfter.idle - machineBefore.idle) / Math.max(1, machineAfter.total - machineBefore.total);
        // Resident memory right after each run: growth across runs of one leg points at a leak, not a peak.
        const rssAfterKiB = leg.pid ? rssKiB(leg.pid) : undefined;
        if (r.failed > 0) throw new Error(`${scenario.name} via ${leg.name}: ${r.failed} failed transactions`);
        runs.push({
          scenario: scenario.name,
          leg: leg.name,
          ...r,
          cpuMicros: cpu,
          systemCpuMicros: systemCpu,
          natsCpuMicros: natsCpu,
          machineIdle,
          rssAfterKiB,
        });
        log(
          `${scenario.name.padEnd(20)} ${leg.name.padEnd(12)} ${r.tps.toFixed(0).padStart(7)} tps${cpu === undefined ? '' : `  ${(cpu / r.transactions).toFixed(1)} µs/tx (system ${(systemCpu / r.transactions).toFixed(1)})`}${natsCpu === undefined ? '' : ` (+ nats-server ${(natsCpu / r.transactions).toFixed(1)} µs/tx)`}  machine idle ${(100 * machineIdle).toFixed(0)} %`,
        );
      }
    }
  }
  const peakRss = Object.fromEntries(started.filter((l) => l.pid).map((l) => [l.name, peakRssKiB(l.pid)]));
  const auditEvents = Object.fromEntries(
    started.filter((l) => l.auditFile).map((l) => [l.name, countLines(l.auditFile)]),
  );
  // Signed legs: how many of those events are checkpoints (a handful per second, not one per statement).
  const auditCheckpoints = Object.fromEntries(
    started
      .filter((l) => l.auditFile && l.signed)
      .map((l) => [l.name, countOccurrences(l.auditFile, '"type":"audit.checkpoint"')]),
  );
  const natsMessages = {};
  for (const l of started.filter((x) => x.auditNats)) {
    // Stopped first: the sidecar flushes what is still awaiting JetStream's ack when it shuts down.
    await l.stop();
    auditEvents[l.name] = await nats.auditMessages();
    natsMessages[l.name] = nats.messages;
  }
  const rows = summarise(runs, BASELINE_PROXY);
  const verdicts = targets(rows, peakRss);
  const split = costSplit(rows);
  const result = {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: machine(pg.version),
    config: { seconds, transactions, repeats, scenarios, legs },
    results: rows,
    peakRssKiB: peakRss,
    auditEvents,
    auditCheckpoints,
    natsMessages,
    targets: verdicts,
    costSplit: split,
  };
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`\n${formatTable(rows, peakRss)}\n`);
  for (const [leg, n] of Object.entries(auditEvents)) process.stdout.write(`audit events written by ${leg}: ${n}\n`);
  for (const [leg, n] of Object.entries(auditCheckpoints))
    process.stdout.write(`signed checkpoints among them (${leg}): ${n}\n`);
  for (const [leg, m] of Object.entries(natsMessages))
    process.stdout.write(
      `JetStream messages from ${leg}: ${m} (${(auditEvents[leg] / Math.max(1, m)).toFixed(1)} events each)\n`,
    );
  if (split.length) process.stdout.write(`${formatCostSplit(split)}\n`);
  for (const t of verdicts)
    process.stdout.write(`target ${t.target}: ${t.value.toFixed(2)} ${t.met ? 'met' : 'NOT MET'}\n`);
  process.stdout.write(`results: ${outFile}\n`);
  await cleanup();
} catch (err) {
  process.stderr.write(`bench failed: ${err.stack ?? err}\n`);
  await cleanup();
  process.exit(1);
}

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

/** Occurrences of `needle` in a file, read in chunks (see countLines); chunks overlap so none is missed at a seam. */
function countOccurrences(file, text) {
  const needle = Buffer.from(text);
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let keep = 0;
    let found = 0;
    for (;;) {
      const n = readSync(fd, buf, keep, buf.length - keep, null);
      if (n === 0) return found;
      const end = keep + n;
      for (let i = buf.indexOf(needle); i !== -1 && i + needle.length <= end; i = buf.indexOf(needle, i + 1)) found++;
      keep = Math.min(needle.length - 1, end);
      buf.copy(buf, 0, end - keep, end);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Lines in the audit file, counted in chunks: a long run writes more than V8's largest string (~512 MiB), and
 * reading it whole as text threw and reported 0.
 */
function countLines(file) {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let lines = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return lines;
      const chunk = buf.subarray(0, n);
      for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) lines++;
    }
  } finally {
    closeSync(fd);
  }
}
