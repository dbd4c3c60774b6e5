/**
 * Hot-path cost of analysis + decision. Run: npx vitest bench --run policy/bench/decide.bench.ts
 * (not part of `vitest run`; the targets: cached decision ≤ 2 µs, uncached 200-char SELECT ≤ 60 µs).
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
let n = 0;

describe('policy decision', () => {
  bench('cached: analyse + decide, same text', () => {
    decide(spec, analyzeSql(select200, session), subject);
  });
  bench('uncached: 200-char SELECT, literal differs every time', () => {
    n++;
    decide(spec, analyzeSql(`${select200} OFFSET ${n}`, session), subject);
  });
  bench('uncached: cache cleared (parse + analyse + decide)', () => {
    clearAnalysisCache();
    decide(spec, analyzeSql(select200, session), subject);
  });
});
