import { beforeAll, describe, expect, it } from 'vitest';
import { constantsOnlyAsValues } from './grant-constants.js';
import { initSqlParser, normalizeSql } from './parser.js';

beforeAll(async () => {
  await initSqlParser();
});

// As the sidecar asks: of the normalized text, whose parse tree is the shape a grant covers.
const grantable = (sql: string) => constantsOnlyAsValues(normalizeSql(sql));
const each = (list: string[], want: boolean) => {
  for (const sql of list) expect([sql, grantable(sql)]).toEqual([sql, want]);
};

describe('which held statements a grant may cover', () => {
  it('constants that are values compared with or given to a column: the rows or data differ, not the statement', () => {
    each(
      [
        'DELETE FROM orders WHERE id = 100',
        'DELETE FROM orders WHERE id = $1',
        'DELETE FROM orders WHERE (id = 3 AND status <> $1)',
        "UPDATE orders SET status = 'shipped' WHERE id = 5",
        'DELETE FROM orders WHERE id IN (1, 2, 3)',
        "DELETE FROM orders o WHERE o.note NOT LIKE 'x%'",
        "INSERT INTO orders (id, customer_id) VALUES (1, 2), (3, '4'::int)",
        "INSERT INTO orders AS o (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = 'y' WHERE o.id = 2",
        '/* app=agent */ DELETE FROM orders WHERE id = 1 -- trailing note',
        'DELETE FROM orders WHERE id = $1::bigint AND day = 5',
        'DELETE FROM orders WHERE id = 5 AND NOT EXISTS (SELECT FROM payments p WHERE p.order_id = orders.id)',
        'SELECT * FROM orders WHERE id = -7::bigint',
      ],
      true,
    );
  });

  it('harmless shapes the text-based check refused now get a grant', () => {
    each(
      [
        // The constant on the left of the column: the same choice of rows.
        "DELETE FROM orders WHERE 'a'::text = status",
        'DELETE FROM orders WHERE 10 < id',
        'DELETE FROM orders WHERE id BETWEEN 10 AND 20',
        'DELETE FROM orders WHERE id NOT BETWEEN SYMMETRIC 20 AND 10',
        "DELETE FROM orders WHERE status IS DISTINCT FROM 'open'",
        'DELETE FROM orders WHERE id NOT IN (1, 2)',
        "DELETE FROM orders WHERE NOT (status = 'open' OR id = 4)",
        "DELETE FROM orders WHERE note ILIKE 'x%' AND flag = true",
        "DELETE FROM orders WHERE created < '2026-01-01 00:00'::timestamp with time zone",
        "DELETE FROM orders WHERE amount >= 10.5::numeric(10,2) AND ref = 'r'::varchar(12)",
        'DELETE FROM orders WHERE id OPERATOR(pg_catalog.=) 5',
        'DELETE FROM ONLY orders WHERE orders.id = 5',
        'DELETE FROM "Orders" WHERE "Id" = 5',
        // Values next to expressions without constants: the expressions are part of the shape.
        "INSERT INTO orders (id, note, created) VALUES (1, 'x', now()), (2, DEFAULT, now())",
        "UPDATE orders SET status = 'x', updated = now(), note = NULL WHERE id = 5 RETURNING id, status",
        'SELECT id, note FROM orders WHERE id > 5 ORDER BY id FOR UPDATE',
        'DELETE FROM orders WHERE id = 1; DELETE FROM orders WHERE id = 2',
        // No constant at all: the shape is the statement.
        'DELETE FROM orders o USING customers c WHERE o.customer_id = c.id',
        'TRUNCATE orders',
      ],
      true,
    );
  });

  it('a constant that can steer the whole statement: the same shape does something else (no grant)', () => {
    each(
      [
        'DELETE FROM orders WHERE id = 500 OR 1 = 0',
        'DELETE FROM orders WHERE false',
        'DELETE FROM orders WHERE id = 5 OR true',
        "DELETE FROM orders WHERE id = 1 OR 'f'::boolean",
        'DELETE FROM orders WHERE $1',
        'SELECT * FROM orders LIMIT 5',
        'SELECT * FROM orders WHERE id > 5 OFFSET 10',
        'SELECT * FROM orders WHERE id = $1 ORDER BY $2',
        "DELETE FROM orders WHERE now() > '2030-01-01'",
        "DELETE FROM orders WHERE current_user = 'bob'",
        "DELETE FROM orders WHERE created > now() - '1 day'::interval",
        'UPDATE orders SET n = n + 1 WHERE id = 3',
        'DELETE FROM orders WHERE EXISTS (SELECT FROM (VALUES (true)) v(b) WHERE b)',
        // One array constant holds any number of values: one row's or all of them.
        'DELETE FROM orders WHERE id = ANY($1)',
        "DELETE FROM orders WHERE id = ANY('{1,2}'::int[])",
        'DELETE FROM orders o USING orders p WHERE o.id = 5 OR p.id = 5',
        "DELETE FROM orders USING pg_roles r WHERE id = 5 OR r.rolname = 'postgres'",
        "SELECT * FROM orders o, pg_roles r WHERE o.id = 5 OR r.rolname = 'postgres'",
        'SELECT * FROM orders o JOIN orders p ON true WHERE o.id = 5 OR p.id = 5',
        "UPDATE orders SET status = 'x' FROM pg_roles r WHERE id = 5 OR r.rolname = 'postgres'",
        // Comments hide nothing from the parser.
        "DELETE FROM orders WHERE -- a =\n 'f'::boolean",
        'DELETE FROM orders WHERE id = 5 OR -- a =\n 1 -- b\n = 0',
        // A "column" of a FROM item that is not a table: the same value on every row.
        'DELETE FROM orders USING pg_backend_pid() p WHERE id = 5 OR p > 0',
        'UPDATE orders SET a = 1 FROM pg_backend_pid() g WHERE id = 5 OR g > 0',
        'DELETE FROM orders USING (SELECT count(*) AS n FROM orders) c WHERE id = 5 OR n > 0',
        "WITH c AS (SELECT now() AS t) DELETE FROM orders USING c WHERE id = 5 OR t > '2000-01-01'",
        'WITH d AS (DELETE FROM orders WHERE id = 5 RETURNING id) SELECT * FROM d',
        'SELECT * FROM orders TABLESAMPLE bernoulli (50) WHERE id = 5',
        'SELECT * FROM orders o(a, b) WHERE a = 5',
        // A constant in a subquery decides it for every row at once (EXISTS: all or none).
        'DELETE FROM orders WHERE id = 5 OR id IN (SELECT id FROM orders, pg_backend_pid() p WHERE p > 0)',
        'DELETE FROM orders WHERE id = 5 OR EXISTS (SELECT FROM orders WHERE id > 0)',
        'DELETE FROM orders WHERE id IN (SELECT orders.id FROM customers c WHERE c.name = $1)',
        'DELETE FROM orders WHERE id = (SELECT 5)',
        // VALUES that are not the INSERT's own rows; INSERT … SELECT reads a second relation.
        'INSERT INTO archive SELECT o.* FROM orders o, (VALUES (true)) v(b) WHERE b',
        'INSERT INTO archive (SELECT o.* FROM orders o WHERE EXISTS (SELECT FROM (VALUES (1)) v(b) WHERE b = 1))',
        'INSERT INTO archive SELECT * FROM orders WHERE id = 5',
        'INSERT INTO archive (id) SELECT 5',
        'INSERT INTO archive (id) VALUES (1) LIMIT 1',
        'SELECT * FROM (VALUES (1)) v(id) WHERE id = 1',
        // The proposed row of ON CONFLICT holds the VALUES' constants: comparing it with a constant is a switch.
        "INSERT INTO orders (id, flag) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET note = 'y' WHERE excluded.flag = 'a'",
        // Function arguments, casts that look names up, arithmetic, CASE, row and array forms.
        'DELETE FROM orders WHERE id = 5 OR pg_sleep(1) IS NULL',
        "DELETE FROM orders WHERE note = lower('X')",
        "DELETE FROM orders WHERE tableoid = 'orders'::regclass",
        "DELETE FROM orders WHERE owner = 'alice'::regrole",
        "DELETE FROM orders WHERE kind = 'x'::app.kind",
        "DELETE FROM orders WHERE data->>'k' = 'v'",
        'DELETE FROM orders WHERE id = 2 + 3',
        "DELETE FROM orders WHERE id = 5 OR CASE WHEN id IS NULL THEN NULL ELSE now() END > '2000-01-01'",
        "DELETE FROM orders WHERE id = 5 OR now()::timestamp with time zone > '2000-01-01'",
        'DELETE FROM orders WHERE id = 5 OR random()::double precision < 2',
        "DELETE FROM orders WHERE (id, note) = (5, 'x')",
        "DELETE FROM orders WHERE note LIKE 'x!%' ESCAPE '!'",
        "DELETE FROM orders WHERE note SIMILAR TO 'x%'",
        "DELETE FROM orders WHERE 'x%' LIKE note",
        'DELETE FROM orders WHERE note = \'x\' COLLATE "C"',
        "DELETE FROM orders WHERE id = 5 OR system_user = 'x'",
        'DELETE FROM orders WHERE id = 5 OR id OPERATOR(app.=) 5',
        // Read as `id = (OPERATOR(pg_catalog.=) 5)`: a prefix operator applied to the constant.
        'DELETE FROM orders WHERE id = OPERATOR(pg_catalog.=) 5',
        "UPDATE orders SET tags[1] = 'x' WHERE id = 5",
        "UPDATE orders SET (status, note) = ('a', 'b') WHERE id = 5",
        'UPDATE orders SET status = $1 WHERE id = 5 RETURNING $2',
        'SELECT $1 FROM orders WHERE id = 5',
        'SELECT count(*) FROM orders WHERE id > 5 HAVING count(*) > 0',
        // Columns of another relation than the one, or not plainly a column.
        'DELETE FROM orders o WHERE p.id = 5',
        'DELETE FROM public.orders WHERE public.orders.id = 5',
        'SELECT * FROM orders WHERE id = 5 UNION SELECT * FROM orders WHERE id = 6',
        // Every statement must pass, and other kinds of statement do not place constants at all.
        'DELETE FROM orders WHERE id = 5; SELECT pg_sleep(10)',
        'COPY (SELECT * FROM orders WHERE id = 5) TO STDOUT',
        'EXPLAIN ANALYZE DELETE FROM orders WHERE id = 5',
        'MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED AND o.id = 5 THEN DELETE',
        'SELECT id INTO TEMP t FROM orders WHERE id = 5',
      ],
      false,
    );
    // What the sidecar passes for text that does not normalize.
    expect(constantsOnlyAsValues('[unparseable statement, 12 characters]')).toBe(false);
  });
});
