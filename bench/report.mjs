// Summarises benchmark runs (medians, ratios) and prints them as a table.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/**
 * runs: [{scenario, leg, tps, transactions, cpuMicros?, systemCpuMicros?, natsCpuMicros?, machineIdle}] → one row per
 * (scenario, leg) with medians and ratios.
 */
export function summarise(runs, baselineProxy) {
  const rows = [];
  const key = (s, l) => `${s}\u0000${l}`;
  const groups = new Map();
  for (const r of runs) {
    const k = key(r.scenario, r.leg);
    if (!groups.has(k)) groups.set(k, { scenario: r.scenario, leg: r.leg, runs: [] });
    groups.get(k).runs.push(r);
  }
  const tpsOf = (s, l) => groups.get(key(s, l)) && median(groups.get(key(s, l)).runs.map((r) => r.tps));
  for (const g of groups.values()) {
    const tps = median(g.runs.map((r) => r.tps));
    const cpu = g.runs.every((r) => r.cpuMicros === undefined)
      ? undefined
      : median(g.runs.map((r) => r.cpuMicros / Math.max(1, r.transactions)));
    const systemCpu = g.runs.every((r) => r.systemCpuMicros === undefined)
      ? undefined
      : median(g.runs.map((r) => r.systemCpuMicros / Math.max(1, r.transactions)));
    const natsCpu = g.runs.every((r) => r.natsCpuMicros === undefined)
      ? undefined
      : median(g.runs.map((r) => r.natsCpuMicros / Math.max(1, r.transactions)));
    const direct = tpsOf(g.scenario, 'direct');
    const bare = tpsOf(g.scenario, baselineProxy);
    rows.push({
      scenario: g.scenario,
      leg: g.leg,
      tps,
      vsDirect: direct ? tps / direct : undefined,
      vsBare: bare && g.leg !== 'direct' ? tps / bare : undefined,
      cpuMicrosPerTx: cpu,
      systemCpuMicrosPerTx: systemCpu,
      natsServerCpuMicrosPerTx: natsCpu,
      machineIdle: median(g.runs.map((r) => r.machineIdle)),
      runs: g.runs.map((r) => ({
        tps: r.tps,
        transactions: r.transactions,
        cpuMicros: r.cpuMicros,
        systemCpuMicros: r.systemCpuMicros,
        natsCpuMicros: r.natsCpuMicros,
        machineIdle: r.machineIdle,
        rssAfterKiB: r.rssAfterKiB,
      })),
    });
  }
  return rows;
}

export function formatTable(rows, peakRss) {
  const head = ['scenario', 'leg', 'tps (median)', '×bare', '×direct', 'CPU µs/tx', 'nats µs/tx', 'tps of each run'];
  const fmt = (x, d = 2) => (x === undefined || !Number.isFinite(x) ? '' : x.toFixed(d));
  const body = rows.map((r) => [
    r.scenario,
    r.leg,
    fmt(r.tps, 0),
    fmt(r.vsBare),
    fmt(r.vsDirect),
    fmt(r.cpuMicrosPerTx, 1),
    fmt(r.natsServerCpuMicrosPerTx, 1),
    r.runs.map((x) => x.tps.toFixed(0)).join(' '),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  out.push('');
  for (const [leg, kib] of Object.entries(peakRss)) out.push(`peak RSS ${leg}: ${(kib / 1024).toFixed(1)} MiB`);
  return out.join('\n');
}

/** The machine the numbers came from. */
export function machine(pgVersion) {
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? totalmem() / 1024);
  let pgbench = '';
  try {
    pgbench = execFileSync('pgbench', ['--version'], { encoding: 'utf8' }).trim();
  } catch {}
  return {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryMiB: Math.round(memKiB / 1024),
    node: process.version,
    postgres: pgVersion,
    pgbench,
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    loadavg: readFileSync('/proc/loadavg', 'utf8').trim(),
  };
}

/**
 * The issues' targets: the `sidecar` leg ≥ 0.9× the bare pipe on select-only -c 8 and peak RSS ≤ 96 MiB; the
 * `sidecar-nats` leg (JetStream audit sink) ≥ 0.9× `sidecar` (file sink) on select-only -c 8; the `masked` leg
 * ≥ 0.6× the `policy` leg on the 1000-row query.
 * Returns only the targets whose legs and scenarios the run included.
 */
export function targets(rows, peakRss) {
  const out = [];
  const c8 = rows.filter((r) => r.leg === 'sidecar' && /^select-.*-c8$/.test(r.scenario) && r.vsBare !== undefined);
  if (c8.length) {
    const worst = Math.min(...c8.map((r) => r.vsBare));
    out.push({ target: 'sidecar ≥ 0.9× bare pipe, select-only -c 8', value: worst, met: worst >= 0.9 });
  }
  const natsRatios = rows
    .filter((r) => r.leg === 'sidecar-nats' && /^select-.*-c8$/.test(r.scenario))
    .map((r) => [r.tps, rows.find((x) => x.leg === 'sidecar' && x.scenario === r.scenario)?.tps])
    .filter(([, file]) => file > 0)
    .map(([n, file]) => n / file);
  if (natsRatios.length) {
    const worst = Math.min(...natsRatios);
    out.push({ target: 'sidecar-nats ≥ 0.9× sidecar (file sink), select-only -c 8', value: worst, met: worst >= 0.9 });
  }
  // Masking issue: the 1000-row query with two masked columns ≥ 0.6× the same policy without the MaskingRule.
  const maskRatios = rows
    .filter((r) => r.leg === 'masked' && /^rows1000-/.test(r.scenario))
    .map((r) => [r.tps, rows.find((x) => x.leg === 'policy' && x.scenario === r.scenario)?.tps])
    .filter(([, plain]) => plain > 0)
    .map(([m, plain]) => m / plain);
  if (maskRatios.length) {
    const worst = Math.min(...maskRatios);
    out.push({ target: 'masked ≥ 0.6× unmasked (policy leg), 1000-row query', value: worst, met: worst >= 0.6 });
  }
  if (peakRss.sidecar !== undefined) {
    const mib = peakRss.sidecar / 1024;
    out.push({ target: 'sidecar peak RSS ≤ 96 MiB', value: mib, met: mib <= 96 });
  }
  return out;
}

/**
 * Where the sidecar's distance from the bare pipe comes from, per select-only -c 8 scenario: proxying (the sidecar's
 * proxy without audit, `proxy-no-audit`, against the bare pipe) and auditing (the `sidecar` leg against
 * `proxy-no-audit`), as throughput ratios and as the CPU µs per transaction each step adds.
 * Returns only scenarios the run measured on all three legs.
 */
export function costSplit(rows) {
  const out = [];
  for (const sidecar of rows.filter((r) => r.leg === 'sidecar' && /^select-.*-c8$/.test(r.scenario))) {
    const of = (leg) => rows.find((r) => r.leg === leg && r.scenario === sidecar.scenario);
    const bare = of('bare-pipe');
    const proxy = of('proxy-no-audit');
    if (!bare || !proxy || !(bare.tps > 0) || !(proxy.tps > 0)) continue;
    out.push({
      scenario: sidecar.scenario,
      proxyVsBare: proxy.tps / bare.tps,
      auditVsProxy: sidecar.tps / proxy.tps,
      proxyCpuMicrosPerTx: proxy.cpuMicrosPerTx - bare.cpuMicrosPerTx,
      auditCpuMicrosPerTx: sidecar.cpuMicrosPerTx - proxy.cpuMicrosPerTx,
    });
  }
  return out;
}

export function formatCostSplit(split) {
  const sign = (x) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
  return split
    .map(
      (s) =>
        `cost split ${s.scenario}: proxying ${s.proxyVsBare.toFixed(2)}× bare pipe (${sign(s.proxyCpuMicrosPerTx)} µs/tx), ` +
        `auditing ${s.auditVsProxy.toFixed(2)}× that (${sign(s.auditCpuMicrosPerTx)} µs/tx)`,
    )
    .join('\n');
}
