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

await initSqlParser();
const spec = parsePolicyDocuments(
  readFileSync(new URL('../../examples/analyst-readonly.yaml', import.meta.url), 'utf8'),
).policies[0].spec;
const subject = { groups: ['data-team'] };
const session = createSessionState();
const select200 =
  'SELECT o.id, o.status, o.total, c.name, c.email FROM public.orders o JOIN public.customers c ON c.id = o.customer_id ' +
  "WHERE o.created_at > now() - interval '7 days' AND o.status IN ('paid', 'shipped') ORDER BY o.id LIMIT 100";
// Exercises the walker's scope handling and statement nesting rather than the flat SELECT's fast path.
const selectCte =
  'WITH recent AS (SELECT customer_id, max(created_at) AS last FROM public.orders GROUP BY customer_id) ' +
  'SELECT c.id, c.name, r.last FROM public.customers c JOIN recent r ON r.customer_id = c.id ' +
  "WHERE c.id IN (SELECT customer_id FROM public.order_items WHERE sku = 'x') ORDER BY r.last";
let n = 0;
const warm = { warmupIterations: 5000, warmupTime: 500, time: 1000 };

describe('policy decision', () => {
  bench('cached: analyse + decide, same text', () => {
    decide(spec, analyzeSql(select200, session), subject);
  });
  bench(
    'uncached: 200-char SELECT, literal differs every time',
    () => {
      n++;
      decide(spec, analyzeSql(`${select200} OFFSET ${n}`, session), subject);
    },
    warm,
  );
  bench(
    'uncached: cache cleared (parse + analyse + decide)',
    () => {
      clearAnalysisCache();
      decide(spec, analyzeSql(select200, session), subject);
    },
    warm,
  );
  bench(
    'uncached: 280-char SELECT with a CTE and a subquery, literal differs',
    () => {
      n++;
      decide(spec, analyzeSql(`${selectCte} OFFSET ${n}`, session), subject);
    },
    warm,
  );
});
