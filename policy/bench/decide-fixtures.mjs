// The statements and policy both decision benchmarks measure (decide.bench.ts under vitest, decide-steady.mjs in a
// fresh process), so their numbers stay comparable. Issue 3's target is set on SELECT_200.

/** The analyst example policy (examples/analyst-readonly.yaml) the targets are measured under. */
export const ANALYST_POLICY_URL = new URL('../../examples/analyst-readonly.yaml', import.meta.url);

/** The subject the decisions are made for (a group the analyst policy names). */
export const SUBJECT = { groups: ['data-team'] };

/** The 200-character SELECT of the target. */
export const SELECT_200 =
  'SELECT o.id, o.status, o.total, c.name, c.email FROM public.orders o JOIN public.customers c ON c.id = o.customer_id ' +
  "WHERE o.created_at > now() - interval '7 days' AND o.status IN ('paid', 'shipped') ORDER BY o.id LIMIT 100";

/** Exercises the walker's scope handling and statement nesting rather than the flat SELECT's fast path. */
export const SELECT_CTE =
  'WITH recent AS (SELECT customer_id, max(created_at) AS last FROM public.orders GROUP BY customer_id) ' +
  'SELECT c.id, c.name, r.last FROM public.customers c JOIN recent r ON r.customer_id = c.id ' +
  "WHERE c.id IN (SELECT customer_id FROM public.order_items WHERE sku = 'x') ORDER BY r.last";
