import { CORPUS } from '../corpus/statement-corpus.js';
import { analyzeSql, clearAnalysisCache } from './analyze-sql.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

/**
 * Runs the analysis over the statement corpus a few times so V8 has compiled the parser glue and the walker before
 * the first client statement: measured cold (200-char SELECTs, loaded 2-core machine), the first 200 statements
 * cost 0.7–1.9 ms of CPU each and the next few hundred 0.2–0.7 ms; after 8 rounds over the corpus (~1,700
 * analyses, 0.3–0.7 s of CPU once at start-up) the first 200 cost ~0.35 ms and the next ~0.1–0.15 ms. The sidecar calls this before it reports ready. The corpus analyses are
 * dropped from the cache afterwards, so no client statement is ever answered from a warm-up entry.
 * Returns the CPU milliseconds spent.
 */
let warmed = false;

/** Whether this process has already run the warm-up (a sidecar started in it did, say). */
export function sqlAnalysisWarmedUp(): boolean {
  return warmed;
}

export async function warmUpSqlAnalysis(rounds = 8): Promise<number> {
  await initSqlParser();
  // Once per process: a second sidecar listener (or test) in the same process finds the code already compiled.
  if (warmed) return 0;
  warmed = true;
  const t0 = process.cpuUsage();
  for (let r = 0; r < rounds; r++) {
    for (const { sql } of CORPUS) {
      // A variation per round so every round parses (the cache keys on the exact text).
      analyzeSql(`${sql} -- ${r}`, createSessionState());
    }
  }
  clearAnalysisCache();
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / 1000;
}
