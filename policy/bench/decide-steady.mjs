/**
 * Steady-state cost of analysis + decision in a fresh process, as in the sidecar (no test runner heap, no
 * tinybench). Run after `npx tsc -b`: node policy/bench/decide-steady.mjs [rounds]
 *
 * Each case warms up first (V8 tiers the parser's WASM and the walker up over the first few thousand statements),
 * then runs `rounds` timed rounds. Per round it reports CPU µs per statement (process.cpuUsage: what the 2-core
 * machine the targets were set on can be trusted to measure) and wall µs; the table shows the min and median of
 * the rounds, and the milliseconds of garbage collection per round (median). Query strings are built before each
 * round, so the timed loop is what a session does per Query message: analyzeSql + decide.
 * Targets (issue 3): cached ≤ 2 µs, uncached 200-char SELECT ≤ 60 µs.
 */
import { readFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { analyzeSql, createSessionState, decide, initSqlParser, parsePolicyDocuments } from '../dist/index.js';
import { ANALYST_POLICY_URL, SELECT_200, SELECT_CTE, SUBJECT } from './decide-fixtures.mjs';

const rounds = Number(process.argv[2] ?? 9);
await initSqlParser();
const spec = parsePolicyDocuments(readFileSync(ANALYST_POLICY_URL, 'utf8')).policies[0].spec;
const session = createSessionState();

let gcMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });

let n = 0;
const cases = [
  {
    name: 'uncached: 200-char SELECT, literal differs',
    perRound: 5000,
    warmup: 20000,
    text: () => `${SELECT_200} OFFSET ${n++}`,
  },
  {
    name: 'uncached: 280-char SELECT with CTE + subquery',
    perRound: 5000,
    warmup: 10000,
    text: () => `${SELECT_CTE} OFFSET ${n++}`,
  },
  { name: 'cached: same 200-char SELECT', perRound: 200000, warmup: 200000, text: () => SELECT_200 },
];

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const fmt = (x) => x.toFixed(2).padStart(8);

// The gc entries reach the observer two event-loop turns after the collection.
const settle = async () => {
  await new Promise(setImmediate);
  await new Promise(setImmediate);
};

async function round(c, count) {
  const texts = Array.from({ length: count }, c.text);
  await settle(); // the setup's collections are not counted
  gcMs = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) decide(spec, analyzeSql(texts[i], session), SUBJECT);
  const wall = Number(process.hrtime.bigint() - t0) / 1000 / count;
  const cpu = process.cpuUsage(cpu0);
  await settle();
  return { cpu: (cpu.user + cpu.system) / count, wall, gc: gcMs };
}

console.log(`node ${process.version}, ${rounds} rounds per case after warm-up; µs per analyzeSql + decide`);
console.log(`${'case'.padEnd(48)}  cpu min  cpu med wall min wall med  gc ms/round`);
for (const c of cases) {
  await round(c, c.warmup);
  const rs = [];
  for (let r = 0; r < rounds; r++) rs.push(await round(c, c.perRound));
  const cpu = rs.map((r) => r.cpu);
  const wall = rs.map((r) => r.wall);
  console.log(
    `${c.name.padEnd(48)} ${fmt(Math.min(...cpu))} ${fmt(median(cpu))} ${fmt(Math.min(...wall))} ${fmt(median(wall))} ${fmt(median(rs.map((r) => r.gc)))}`,
  );
}
