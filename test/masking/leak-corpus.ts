/**
 * Queries that try to get planted values out through a masking sidecar. `expect` says what a correct sidecar does:
 * `rows` (answers, with masked values), `denied` (SQLSTATE 42501 from the masking checks), `error` (an upstream
 * error, scrubbed), `any`. Every entry is also checked byte for byte for the planted values.
 */
export interface LeakQuery {
  sql: string[];
  mode?: 'simple' | 'extended' | 'binary';
  params?: unknown[];
  expect: 'rows' | 'denied' | 'error' | 'any';
}

const q = (expect: LeakQuery['expect'], ...sql: string[]): LeakQuery => ({ sql, expect });
const x = (
  mode: 'extended' | 'binary',
  expect: LeakQuery['expect'],
  sql: string,
  params: unknown[] = [],
): LeakQuery => ({ sql: [sql], mode, params, expect });

/** Set-returning functions over masked values: their row count is a channel, so they count as predicates. */
export function srfQueries(S: string): string[] {
  const C = `${S}.customers`;
  return [
    `SELECT string_to_array(ssn, '-'), unnest(ARRAY[email]) FROM ${C}`,
    `SELECT jsonb_path_query(to_jsonb(c), '$.full_name') FROM ${C} c`,
    `SELECT * FROM ROWS FROM (jsonb_to_recordset((SELECT jsonb_agg(c) FROM ${C} c))) AS r(full_name text, ssn text)`,
    `SELECT u FROM ${C} c, LATERAL unnest(ARRAY[c.full_name]) AS u`,
  ];
}

export function leakCorpus(S: string): LeakQuery[] {
  const C = `${S}.customers`;
  return [
    // Direct references, aliases, whole rows.
    q('rows', `SELECT * FROM ${C}`),
    q('rows', `SELECT full_name, email, ssn, phone, card_number, secret_note FROM ${C}`),
    q('rows', `SELECT ssn AS harmless, email AS id2 FROM ${C}`),
    q('rows', `TABLE ${C}`),
    q('rows', `SELECT c FROM ${C} c`),
    q('rows', `SELECT c.* FROM ${C} c`),
    q('rows', `SELECT (c).* FROM ${C} c`),
    q('rows', `SELECT (c).full_name FROM ${C} c`),
    q('rows', `SELECT c::text FROM ${C} c`),
    q('rows', `SELECT row_to_json(c) FROM ${C} c`),
    q('rows', `SELECT to_jsonb(c) FROM ${C} c`),
    q('rows', `SELECT json_agg(c) FROM ${C} c`),
    q('rows', `SELECT ROW(full_name, email) FROM ${C}`),
    q('rows', `SELECT ARRAY[ssn, email, full_name] FROM ${C}`),
    q('rows', `SELECT "ssn", "full_name" FROM ${S}."customers"`),
    // Derived expressions.
    q('rows', `SELECT upper(email), lower(full_name), reverse(ssn) FROM ${C}`),
    q('rows', `SELECT encode(convert_to(ssn, 'UTF8'), 'base64'), encode(convert_to(email, 'UTF8'), 'hex') FROM ${C}`),
    q('rows', `SELECT encode(convert_to(full_name, 'UTF8'), 'base64') FROM ${C}`),
    q('rows', `SELECT convert_to(full_name, 'UTF8') FROM ${C}`),
    q('rows', `SELECT ssn || '', '' || full_name, concat(card_number, '.') FROM ${C}`),
    q('rows', `SELECT ssn::text::varchar(50), phone::bpchar FROM ${C}`),
    q('rows', `SELECT format('%s|%s', full_name, email) FROM ${C}`),
    q('rows', `SELECT translate(ssn, '0123456789', 'abcdefghij') FROM ${C}`),
    q('rows', `SELECT regexp_replace(email, '@', ' at ') FROM ${C}`),
    q(
      'rows',
      `SELECT substr(full_name, 1), left(ssn, 11), repeat(email, 1), overlay(ssn placing '' from 1 for 0) FROM ${C}`,
    ),
    q(
      'rows',
      `SELECT CASE WHEN ssn IS NOT NULL THEN ssn END, coalesce(NULL, email), greatest(full_name, '') FROM ${C}`,
    ),
    q('denied', `SELECT string_to_array(ssn, '-'), unnest(ARRAY[email]) FROM ${C}`),
    q('rows', `SELECT jsonb_build_object('s', ssn), json_build_array(full_name) FROM ${C}`),
    q('denied', `SELECT jsonb_path_query(to_jsonb(c), '$.full_name') FROM ${C} c`),
    q('rows', `SELECT xmlelement(name x, full_name) FROM ${C}`),
    q('rows', `SELECT md5(ssn), ascii(substr(ssn, 1, 1)) FROM ${C}`),
    // Aggregates.
    q(
      'rows',
      `SELECT string_agg(ssn, ','), array_agg(email), json_agg(full_name), max(card_number), min(phone) FROM ${C}`,
    ),
    q('rows', `SELECT string_agg(full_name, ',' ORDER BY id) FROM ${C}`),
    // Subqueries, CTEs, set operations, LATERAL, VALUES.
    q('rows', `SELECT (SELECT full_name FROM ${C} ORDER BY id LIMIT 1)`),
    q('rows', `SELECT * FROM (SELECT ssn, email FROM ${C}) s`),
    q('rows', `SELECT z FROM (SELECT upper(e) AS z FROM (SELECT email AS e FROM ${C}) a) b`),
    q('rows', `WITH x AS (SELECT email FROM ${C}) SELECT * FROM x`),
    q('rows', `WITH x(e) AS (SELECT full_name FROM ${C}) SELECT lower(e) FROM x`),
    q(
      'rows',
      `WITH RECURSIVE r(v, n) AS (SELECT full_name, 1 FROM ${C} UNION ALL SELECT v, n + 1 FROM r WHERE n < 2) SELECT v FROM r`,
    ),
    // CTEs read as the subqueries they are: column lists (also shorter than the outputs), nesting, a CTE inside a
    // subquery, recursion, a data-modifying CTE's RETURNING, a CTE hiding a table of its name.
    q('rows', `WITH x(a) AS (SELECT full_name, ssn FROM ${C}) SELECT upper(a), lower(ssn) FROM x`),
    q('rows', `WITH x AS (WITH y(q) AS (SELECT ssn FROM ${C}) SELECT q AS z FROM y) SELECT upper(z) FROM x`),
    q('rows', `SELECT (WITH y(q) AS (SELECT full_name FROM ${C}) SELECT lower(q) FROM y LIMIT 1)`),
    q(
      'rows',
      `WITH RECURSIVE r(n, v) AS (SELECT 1, ''::text UNION ALL SELECT n + 1, (SELECT email FROM ${C} ORDER BY id LIMIT 1) || '' FROM r WHERE n < 2) SELECT v FROM r`,
    ),
    q('rows', `WITH u AS (UPDATE ${C} SET city = city WHERE id > 0 RETURNING full_name AS n) SELECT reverse(n) FROM u`),
    q(
      'rows',
      `SET search_path = ${S}`,
      `WITH orders AS (SELECT id, full_name AS card_number FROM customers) SELECT upper(o.card_number) FROM orders o`,
    ),
    q('denied', `WITH x(a) AS (SELECT ssn FROM ${C}) SELECT count(*) FROM x WHERE a LIKE '1%'`),
    // A `*` over a function whose columns the tree does not show (jsonb_to_record's two here) shifts the columns a
    // CTE's or subquery's column list renames: `b` is the masked q, not orders.id.
    q(
      'rows',
      `WITH x(a, b, c) AS (SELECT * FROM jsonb_to_record((SELECT jsonb_build_object('p', ssn, 'q', full_name) FROM ${C} LIMIT 1)) AS j(p text, q text), ${S}.orders o) SELECT b, c FROM x`,
    ),
    q(
      'rows',
      `SELECT s.b FROM (SELECT * FROM jsonb_to_record((SELECT jsonb_build_object('p', ssn, 'q', full_name) FROM ${C} LIMIT 1)) AS j(p text, q text), ${S}.orders o) s(a, b)`,
    ),
    // A DML target is always the table, never a CTE of the same name: its WHERE filters on the masked column.
    q(
      'denied',
      `SET search_path = ${S}`,
      `WITH customers AS (SELECT 1 AS id) UPDATE customers SET id = id WHERE ssn LIKE '%-%' RETURNING id`,
    ),
    // UNION (not ALL), INTERSECT, EXCEPT and DISTINCT compare the masked values: a membership oracle.
    q('denied', `SELECT email FROM ${C} UNION SELECT 'x'`),
    q('denied', `SELECT count(*) FROM (SELECT ssn FROM ${C} INTERSECT SELECT '078-05-1120') x`),
    q('denied', `SELECT count(CASE WHEN ssn LIKE '0%' THEN 1 END) FROM ${C}`),
    q('rows', `SELECT 'x' UNION ALL SELECT full_name FROM ${C}`),
    q('rows', `SELECT l.v FROM ${C} c, LATERAL (SELECT c.ssn || '' AS v) l`),
    q('rows', `SELECT * FROM (VALUES (1)) v, LATERAL (SELECT full_name FROM ${C} LIMIT 1) x`),
    q('rows', `VALUES ((SELECT email FROM ${C} LIMIT 1))`),
    q(
      'denied',
      `SELECT * FROM ROWS FROM (jsonb_to_recordset((SELECT jsonb_agg(c) FROM ${C} c))) AS r(full_name text, ssn text)`,
    ),
    q('denied', `SELECT u FROM ${C} c, LATERAL unnest(ARRAY[c.full_name]) AS u`),
    // Views, materialized views, functions, dynamic SQL, statistics.
    q('rows', `SELECT * FROM ${S}.customer_view`),
    q('rows', `SELECT lower(contact), tax_id FROM ${S}.customer_view`),
    q('rows', `SELECT * FROM ${S}.customer_mat`),
    q('rows', `SELECT ${S}.get_name(id) FROM ${C}`),
    q('rows', `SELECT query_to_xml('select full_name, ssn from ${C}', true, false, '')`),
    q('rows', `SELECT table_to_xml('${C}', true, false, '')`),
    q('rows', `SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE schemaname = '${S}'`),
    q('rows', `SELECT * FROM pg_stats WHERE schemaname = '${S}'`),
    // Several statements in one Query; search_path; extended and binary formats.
    q('rows', `SELECT 1; SELECT upper(full_name) FROM ${C}; SELECT 2`),
    q('rows', `SET search_path = ${S}, public`, 'SELECT lower(email), full_name FROM customers'),
    x('extended', 'rows', `SELECT upper(ssn), full_name FROM ${C} WHERE id = $1`, [1]),
    x(
      'binary',
      'rows',
      `SELECT full_name, email, ssn, phone, card_number, secret_note, notes FROM ${C} WHERE id = $1`,
      [1],
    ),
    x(
      'binary',
      'rows',
      `SELECT convert_to(full_name, 'UTF8'), to_jsonb(c), ARRAY[email] FROM ${C} c WHERE id = $1`,
      [1],
    ),
    x('binary', 'rows', `SELECT c FROM ${C} c`),
    // Cursors, prepared statements, RETURNING.
    q('rows', 'BEGIN', `DECLARE k CURSOR FOR SELECT upper(full_name), ssn FROM ${C}`, 'FETCH ALL FROM k', 'COMMIT'),
    q('rows', 'BEGIN', `DECLARE k2 CURSOR FOR SELECT * FROM ${C}`, 'FETCH 2 FROM k2', 'FETCH ALL FROM k2', 'ROLLBACK'),
    q('rows', `PREPARE p AS SELECT lower(email), reverse(full_name) FROM ${C}`, 'EXECUTE p'),
    q('rows', 'BEGIN', `UPDATE ${C} SET age = age WHERE id = 1 RETURNING full_name, upper(email), ssn`, 'ROLLBACK'),
    q('rows', 'BEGIN', `DELETE FROM ${S}.orders WHERE id = 2 RETURNING *`, 'ROLLBACK'),
    // EXPLAIN.
    q('rows', `EXPLAIN (VERBOSE) SELECT upper(full_name) FROM ${C}`),
    q('rows', `EXPLAIN ANALYZE SELECT full_name FROM ${C}`),
    // COPY.
    q('denied', `COPY ${C} TO STDOUT`),
    q('denied', `COPY (SELECT upper(full_name) FROM ${C}) TO STDOUT`),
    q('denied', `COPY ${C} (full_name) TO STDOUT WITH (FORMAT csv)`),
    q('rows', `COPY (SELECT id, notes FROM ${C}) TO STDOUT`),
    q('denied', `COPY (SELECT id, notes FROM ${C}) TO STDOUT WITH (FORMAT binary)`),
    q('rows', `SELECT notes, upper(notes), lower(notes), to_jsonb(notes)::text FROM ${C} WHERE id = 1`),
    q('error', `SELECT notes::jsonb FROM ${C} WHERE id = 1`),
    q('error', `SELECT notes::int FROM ${C} WHERE id = 1`),
    // Predicates (denied by default), writes and side channels.
    q('denied', `SELECT id FROM ${C} WHERE ssn LIKE '1%'`),
    q('denied', `SELECT count(*) FROM ${C} GROUP BY full_name`),
    q('denied', `SELECT id FROM ${C} ORDER BY email`),
    q('denied', `SELECT o.id FROM ${S}.orders o JOIN ${C} c ON c.card_number = o.card_number`),
    q('denied', `SELECT id FROM ${C} WHERE full_name::int = 1`),
    q('denied', `INSERT INTO ${S}.sink SELECT full_name FROM ${C}`),
    q('denied', `UPDATE ${S}.sink SET v = (SELECT email FROM ${C} LIMIT 1)`),
    q('denied', `CREATE TEMP TABLE launder AS SELECT ssn FROM ${C}`),
    q('denied', `SELECT full_name INTO TEMP launder2 FROM ${C}`),
    q('denied', `LISTEN ch; SELECT pg_notify('ch', full_name) FROM ${C}`),
    q('denied', `SELECT set_config('x.y', full_name, false) FROM ${C}`),
    // Values kept by the server outside any table and read back later: a sequence's value, an advisory lock's key
    // (pg_locks), a large object's OID (pg_largeobject_metadata).
    q(
      'denied',
      'CREATE TEMP SEQUENCE sq',
      `SELECT setval('sq', replace(ssn, '-', '')::bigint) FROM ${C} WHERE id = 1`,
      "SELECT currval('sq'), last_value FROM pg_sequences WHERE sequencename = 'sq'",
    ),
    q(
      'denied',
      'BEGIN',
      `SELECT pg_advisory_xact_lock(replace(ssn, '-', '')::bigint) FROM ${C} WHERE id = 1`,
      "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory'",
      'COMMIT',
    ),
    q(
      'denied',
      `SELECT lo_create(replace(ssn, '-', '')::int) FROM ${C} WHERE id = 2`,
      'SELECT oid FROM pg_largeobject_metadata',
    ),
    q(
      'denied',
      `INSERT INTO ${S}.orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET card_number = (SELECT full_name FROM ${C} LIMIT 1)`,
    ),
    q('denied', `CREATE VIEW ${S}.v_pred AS SELECT id FROM ${C} WHERE ssn LIKE '1%'`),
    q('rows', `CREATE TEMP VIEW vv AS SELECT upper(full_name) AS u, ssn, email FROM ${C}`, 'SELECT * FROM vv'),
    q(
      'rows',
      `CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql AS $$ SELECT full_name FROM ${C} LIMIT 1 $$`,
      'SELECT pg_temp.f()',
    ),
    q('denied', `ALTER TABLE ${C} RENAME COLUMN full_name TO fn`),
    q('denied', `ALTER TABLE ${C} ADD COLUMN fn2 text GENERATED ALWAYS AS (full_name) STORED`),
    // Values PostgreSQL echoes in errors and notices.
    q('error', `SELECT full_name::int FROM ${C}`),
    q('error', `SELECT email::numeric FROM ${C}`),
    q('error', `SELECT ssn::date FROM ${C}`),
    // Echoed without quotes: the JSON parser's CONTEXT, libxml's DETAIL (a reviewer read name and ssn from them).
    q('error', `SELECT full_name::json FROM ${C}`),
    q('error', `SELECT ('<a>' || reverse(ssn) || '</b>')::xml FROM ${C}`),
    // Computed from the value and printed unquoted.
    q('error', `SELECT make_date(2020, 1, replace(ssn, '-', '')::int) FROM ${C} WHERE id = 2`),
    q('error', `SELECT chr(replace(ssn, '-', '')::int) FROM ${C} WHERE id = 2`),
    q('error', `SELECT to_number(full_name, '9') / 0 FROM ${C}`),
    q('error', 'BEGIN', `UPDATE ${C} SET age = -1 WHERE id = 1`, 'ROLLBACK'),
    q('error', 'BEGIN', `UPDATE ${C} SET full_name = NULL WHERE id = 2`, 'ROLLBACK'),
    q('error', 'BEGIN', `INSERT INTO ${C} (id, full_name) VALUES (1, 'dup')`, 'ROLLBACK'),
    q('any', 'LISTEN mask_trg', `UPDATE ${S}.touched SET v = 'b' WHERE id = 1`, 'SELECT 1'),
    q('any', `SELECT ${S}.leak_notice()`),
    // EXPLAIN ANALYZE runs the statement, its functions and triggers with it.
    q('any', `EXPLAIN ANALYZE SELECT ${S}.leak_notice()`),
    q('any', 'LISTEN mask_trg', `EXPLAIN ANALYZE UPDATE ${S}.touched SET v = 'c' WHERE id = 1`, 'SELECT 1'),
    // A view calling a function that raises its argument: the reader's session runs it.
    q('rows', `SELECT * FROM ${S}.shouting_view`),
    // User code behind an operator, a cast, a domain CHECK or field notation RAISEs what it is given.
    q('rows', `SELECT full_name OPERATOR(${S}.=~~=) 'x' FROM ${C}`),
    q('rows', `SET search_path TO ${S}, public`, `SELECT full_name =~~= 'x' FROM customers`),
    // LIKE and = overloaded for varchar: with the schema on the path, an exact match of the argument types beats
    // pg_catalog's text operators. Rolled back, as every `=` in the database would count as user code meanwhile.
    q(
      'rows',
      `BEGIN; CREATE FUNCTION ${S}.peek_v(varchar, varchar) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE '%', $1; RETURN true; END $$; CREATE OPERATOR ${S}.~~ (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = ${S}.peek_v); CREATE OPERATOR ${S}.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = ${S}.peek_v); SET LOCAL search_path TO ${S}, public; SELECT full_name::varchar LIKE 'x', CASE full_name::varchar WHEN 'x' THEN 1 END, nullif(full_name::varchar, 'x') FROM customers; ROLLBACK`,
    ),
    q('rows', `SET search_path TO ${S}, public`, `SELECT c.peek_row FROM customers c`),
    q('rows', `SET search_path TO ${S}, public`, `SELECT (c).peek_row FROM customers c`),
    q('rows', `SELECT full_name::${S}.boxed FROM ${C}`),
    q('rows', `SET search_path TO ${S}, public`, `SELECT CAST(full_name AS boxed) FROM customers`),
    q('rows', `SELECT n::text FROM ${S}.name_view n`),
    q('rows', `SELECT full_name::${S}.checked FROM ${C}`),
    q('rows', `SET search_path TO ${S}, public`, `SELECT checked(full_name) FROM customers`),
    q('any', `INSERT INTO ${S}.guarded VALUES ('a')`),
    q('any', `INSERT INTO ${S}.domained VALUES ('a')`),
    // Code the catalog snapshot cannot know yet: defined in the same Query, or in the client's open transaction.
    q(
      'rows',
      `BEGIN; CREATE FUNCTION ${S}.tx_peek(text, text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE '%', $1; RETURN true; END $$; CREATE OPERATOR ${S}.<~> (LEFTARG = text, RIGHTARG = text, FUNCTION = ${S}.tx_peek); SET LOCAL search_path TO ${S}, public; SELECT full_name <~> 'x' FROM customers; ROLLBACK`,
    ),
    q(
      'rows',
      'BEGIN',
      `CREATE FUNCTION ${S}.tx_shout(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE '%', $1; RETURN 'x'; END $$`,
      `SET LOCAL search_path TO ${S}, public`,
      'SELECT tx_shout(full_name) FROM customers',
      'ROLLBACK',
    ),
    q('error', `SELECT ${S}.leak_error()`),
    q('any', `DO $$ BEGIN RAISE NOTICE '%', (SELECT full_name FROM ${C} ORDER BY id LIMIT 1); END $$`),
    q('error', `DO $$ BEGIN RAISE EXCEPTION '%', (SELECT email FROM ${C} ORDER BY id LIMIT 1); END $$`),
    // Dynamic SQL built from a masked value fails: PostgreSQL reports the statement it ran in the error's
    // internal-query field (q), which carries the value.
    q(
      'error',
      `DO $$ DECLARE v text; BEGIN SELECT email INTO v FROM ${C} ORDER BY id LIMIT 1; EXECUTE format('SELECT %L::int', v); END $$`,
    ),
    q(
      'error',
      `DO $$ DECLARE v text; BEGIN SELECT ssn INTO v FROM ${C} ORDER BY id LIMIT 1; EXECUTE 'SELECT 1/0 WHERE ' || quote_literal(v) || ' IS NOT NULL'; END $$`,
    ),
  ];
}
