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
    ])
      expect([sql, grantable(sql)]).toEqual([sql, false]);
  });
});
