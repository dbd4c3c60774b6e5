/**
 * Hot-path cost of analysis + decision. Run: npx vitest bench --run policy/bench/decide.bench.ts
 * (not part of `vitest run`; the targets: cached decision ≤ 2 µs, uncached 200-char SELECT ≤ 60 µs).
 *
 * The uncached cases warm up for a few thousand calls first. Until then the process is still compiling: V8
 * compiles the parser's WASM function by function on first use (baseline tier), recompiles the hot ones with
 * TurboFan on background threads that compete for the same cores, and optimises the JavaScript. tinybench's
 * default warm-up (5 calls / 100 ms) ends long before that, so its samples mixed cold and warm code. This measures
 * the warm state, which a sidecar reaches after its first few thousand statements; those cost several times more.
 */
import { readFileSync } from 'node:fs';
import { bench, describe } from 'vitest';
import {
  analyzeSql,
  clearAnalysisCache,
  createSessionState,
  decide,
  initSqlParser,
  parsePolicyDocuments,
} from '../src/index.js';
import { ANALYST_POLICY_URL, SELECT_200, SELECT_CTE, SUBJECT } from './decide-fixtures.mjs';

await initSqlParser();
const spec = parsePolicyDocuments(readFileSync(ANALYST_POLICY_URL, 'utf8')).policies[0].spec;
const session = createSessionState();
let n = 0;
const warm = { warmupIterations: 5000, warmupTime: 500, time: 1000 };

describe('policy decision', () => {
  bench('cached: analyse + decide, same text', () => {
    decide(spec, analyzeSql(SELECT_200, session), SUBJECT);
  });
  bench(
    'uncached: 200-char SELECT, literal differs every time',
    () => {
      n++;
      decide(spec, analyzeSql(`${SELECT_200} OFFSET ${n}`, session), SUBJECT);
    },
    warm,
  );
  bench(
    'uncached: cache cleared (parse + analyse + decide)',
    () => {
      clearAnalysisCache();
      decide(spec, analyzeSql(SELECT_200, session), SUBJECT);
    },
    warm,
  );
  bench(
    'uncached: 280-char SELECT with a CTE and a subquery, literal differs',
    () => {
      n++;
      decide(spec, analyzeSql(`${SELECT_CTE} OFFSET ${n}`, session), SUBJECT);
    },
    warm,
  );
});
