import { initSqlParser, normalizeSql } from '@pgwarden/policy';
import { beforeAll, describe, expect, it } from 'vitest';
import { constantsOnlyAsValues } from './approval-grants.js';

beforeAll(async () => {
  await initSqlParser();
});

const grantable = (sql: string) => constantsOnlyAsValues(normalizeSql(sql));

describe('which held statements a grant may cover', () => {
  it('constants that are values compared with or given to a column: the rows or data differ, not the statement', () => {
    for (const sql of [
      'DELETE FROM orders WHERE id = 100',
      'DELETE FROM orders WHERE id = $1',
      'DELETE FROM orders WHERE (id = 3 AND status <> $1)',
      "UPDATE orders SET status = 'shipped' WHERE id = 5",
      'DELETE FROM orders WHERE id IN (1, 2, 3)',
      "DELETE FROM orders WHERE o.note NOT LIKE 'x%'",
      "INSERT INTO orders (id, customer_id) VALUES (1, 2), (3, '4'::int)",
      "INSERT INTO orders AS o (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = 'y' WHERE o.id = 2",
      '/* app=agent */ DELETE FROM orders WHERE id = 1 -- trailing note',
      'DELETE FROM orders WHERE id = $1::bigint AND day = 5',
      'DELETE FROM orders WHERE id = 5 AND NOT EXISTS (SELECT FROM payments p WHERE p.order_id = orders.id)',
      'SELECT * FROM orders WHERE id = -7::bigint',
    ])
      expect([sql, grantable(sql)]).toEqual([sql, true]);
  });

  it('a constant that can steer the whole statement: the same shape does something else (no grant)', () => {
    for (const sql of [
      'DELETE FROM orders WHERE id = 500 OR 1 = 0',
      'DELETE FROM orders WHERE false',
      "DELETE FROM orders WHERE id = 1 OR 'f'::boolean",
      'DELETE FROM orders WHERE $1',
      'SELECT * FROM orders LIMIT 5',
      "DELETE FROM orders WHERE now() > '2030-01-01'",
      "DELETE FROM orders WHERE current_user = 'bob'",
      "DELETE FROM orders WHERE 'a'::text = status",
      "DELETE FROM orders WHERE created > now() - '1 day'::interval",
      'UPDATE orders SET n = n + 1 WHERE id = 3',
      'DELETE FROM orders WHERE EXISTS (SELECT FROM (VALUES (true)) v(b) WHERE b)',
      'DELETE FROM orders WHERE id = ANY($1)',
      'DELETE FROM orders o USING orders p WHERE o.id = 5 OR p.id = 5',
      "DELETE FROM orders USING pg_roles r WHERE id = 5 OR r.rolname = 'postgres'",
      "SELECT * FROM orders o, pg_roles r WHERE o.id = 5 OR r.rolname = 'postgres'",
      'SELECT * FROM orders o JOIN orders p ON true WHERE o.id = 5 OR p.id = 5',
      "UPDATE orders SET status = 'x' FROM pg_roles r WHERE id = 5 OR r.rolname = 'postgres'",
      // A line comment hides what comes before a constant: `-- a =` makes `'f'::boolean` look compared with `a`.
      "DELETE FROM orders WHERE -- a =\n 'f'::boolean",
      'DELETE FROM orders WHERE id = 5 OR -- a =\n 1 -- b\n = 0',
      // A "column" of a FROM item that is not a table: the same value on every row.
      'DELETE FROM orders USING pg_backend_pid() p WHERE id = 5 OR p > 0',
      'UPDATE orders SET a = 1 FROM pg_backend_pid() g WHERE id = 5 OR g > 0',
      'DELETE FROM orders USING (SELECT count(*) AS n FROM orders) c WHERE id = 5 OR n > 0',
      "WITH c AS (SELECT now() AS t) DELETE FROM orders USING c WHERE id = 5 OR t > '2000-01-01'",
      'DELETE FROM orders WHERE id = 5 OR id IN (SELECT id FROM orders, pg_backend_pid() p WHERE p > 0)',
      // A constant in a subquery decides it for every row at once (EXISTS: all or none).
      'DELETE FROM orders WHERE id = 5 OR EXISTS (SELECT FROM orders WHERE id > 0)',
      'DELETE FROM orders WHERE id IN (SELECT orders.id FROM customers c WHERE c.name = $1)',
      // VALUES that are not the INSERT's own rows.
      'INSERT INTO archive SELECT o.* FROM orders o, (VALUES (true)) v(b) WHERE b',
      'INSERT INTO archive (SELECT o.* FROM orders o WHERE EXISTS (SELECT FROM (VALUES (1)) v(b) WHERE b = 1))',
      // Words before the operator that are not columns: a keyword value, the end of a CASE, a cast's type.
      "DELETE FROM orders WHERE id = 5 OR system_user = 'x'",
      "DELETE FROM orders WHERE id = 5 OR CASE WHEN id IS NULL THEN NULL ELSE now() END > '2000-01-01'",
      "DELETE FROM orders WHERE id = 5 OR now()::timestamp with time zone > '2000-01-01'",
      'DELETE FROM orders WHERE id = 5 OR random()::double precision < 2',
    ])
      expect([sql, grantable(sql)]).toEqual([sql, false]);
  });
});
