import { beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { analyzeSql } from '../sql/analyze-sql.js';
import { initSqlParser } from '../sql/parser.js';
import { createSessionState } from '../sql/session-state.js';
import { decide } from './decide.js';
import type { Subject } from './decision-types.js';

beforeAll(() => initSqlParser());

function policy(body: string) {
  const d = parsePolicyDocuments(
    `apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  database: {host: h, name: d}\n${body}`,
  );
  expect(d.errors).toEqual([]);
  return d.policies[0].spec;
}

const nobody: Subject = { groups: [] };
const run = (spec: ReturnType<typeof policy>, sql: string, subject: Subject = nobody) =>
  decide(spec, analyzeSql(sql, createSessionState()), subject);

describe('decide', () => {
  const spec = policy(`  rules:
    - {name: no-secrets, action: deny, tables: ["secret.*"]}
    - {name: read, action: allow, statements: [select], tables: ["public.*"]}
    - {name: sa-writes, action: allow, statements: [insert], tables: [public.t], subjects: {serviceAccounts: [ns/writer]}}
    - {name: bare-sa, action: allow, statements: [update], tables: [public.t], subjects: {serviceAccounts: ["writer-*"]}}
    - {name: oidc-user, action: review, statements: [delete], subjects: {users: ["alice@*"]}}
  guardrails: {maxRowsReturned: 100, statementTimeout: 1m30s, blockedFunctions: ["pg_catalog.pg_sleep"]}
`);

  it('allows with the limits, naming the rule', () => {
    expect(run(spec, 'SELECT * FROM t')).toMatchObject({
      action: 'allow',
      rule: 'read',
      reason: 'rule',
      maxRows: 100,
      timeoutMs: 90_000,
    });
  });

  it('deny rules match on any overlap; allow rules must cover every relation', () => {
    const d = run(spec, 'SELECT * FROM t JOIN secret.k ON true');
    expect(d).toMatchObject({ action: 'deny', rule: 'no-secrets', code: '42501' });
    expect(d.message).toBe('pgwarden: statement denied by rule "no-secrets" (relations: public.t, secret.k)');
    expect(run(spec, 'SELECT * FROM other.t')).toMatchObject({ action: 'deny', reason: 'default', rule: undefined });
    expect(run(spec, 'SELECT 1')).toMatchObject({ action: 'allow', rule: 'read' }); // no relations: deny rule not hit
  });

  it('deny rules match other spellings of a listed name; allow and review rules only the name itself', () => {
    const p = policy(`  defaultAction: allow
  rules:
    - {name: review-carol, action: review, subjects: {users: [carol@example.com]}}
    - {name: no-boss, action: deny, subjects: {users: [boss@example.com, boss@gmail.com, "ar*"], groups: [contractors]}}
    - {name: carol-too, action: deny, subjects: {users: [carol@example.com]}}
    - {name: dave-reads, action: allow, subjects: {users: [dave@example.com]}}
`);
    const as = (user: string, groups: string[] = []) => run(p, 'SELECT 1', { user, groups });
    for (const user of [
      'boss@example.com',
      'Boss@Example.com',
      'boss+x@example.com',
      'b\u043ess@example.com', // Cyrillic о
      'b\u0585ss@example.com', // Armenian օ: only the collector's table had it
      'B0SS@example.com', // ASCII look-alikes, as the collector reads them
      'bo.ss@googlemail.com', // Gmail ignores the dots
      'Arnold', // a glob that reading rn as m would split still matches
    ])
      expect(as(user), user).toMatchObject({ action: 'deny', rule: 'no-boss' });
    expect(as('someone', ['Contractors'])).toMatchObject({ action: 'deny', rule: 'no-boss' });
    // The review rule, which comes first, matches carol only: Carol is denied by the deny rule behind it, not held.
    expect(as('carol@example.com')).toMatchObject({ action: 'review', rule: 'review-carol' });
    expect(as('Carol@example.com')).toMatchObject({ action: 'deny', rule: 'carol-too' });
    expect(as('dave@example.com')).toMatchObject({ action: 'allow', rule: 'dave-reads' });
    for (const user of ['Dave@example.com', 'd\u0430ve@example.com', 'dave@examp1e.com'])
      expect(as(user), user).toMatchObject({ action: 'allow', rule: undefined, reason: 'default' });
  });

  it("deny rules match the spellings Unicode's confusables (UTS #39) read as a listed name, in every script", () => {
    const p = policy(`  defaultAction: allow
  rules:
    - {name: no-boss, action: deny, subjects: {users: [boss@example.com]}}
    - {name: dave-reads, action: allow, subjects: {users: [dave@example.com]}}
`);
    const as = (user: string) => run(p, 'SELECT 1', { user, groups: [] });
    // Entries of confusables.txt (source → prototype) that the earlier hand-picked table did not have.
    for (const user of [
      'b\u03c3ss@example.com', // Greek σ → o
      'bo\u13d5s@example.com', // Cherokee Ꮥ → S
      '\u13cfoss@example.com', // Cherokee Ꮟ → b
      '\u15afoss@example.com', // Canadian syllabics ᖯ → b
      'b\u2c9fss@example.com', // Coptic ⲟ → o
      'b\u{1042c}ss@example.com', // Deseret 𐐬 → o
      'b\u{104ea}ss@example.com', // Osage 𐓪 → o
      'b\u05e1ss@example.com', // Hebrew ס → o
      'b\u0966ss@example.com', // Devanagari digit zero ० → o
      'b\u1d0fss@example.com', // Latin small capital ᴏ → o
      'bo\u054fs@example.com', // Armenian Տ → S
      'bos\u01bd@example.com', // Latin tone five ƽ → s
      '\u{10301}oss@example.com', // Old Italic 𐌁 → B
      'boss@exa\u16d6ple.com', // Runic ᛖ → M
    ])
      expect(as(user), user).toMatchObject({ action: 'deny', rule: 'no-boss' });
    // An allow rule still names exactly one spelling.
    for (const user of ['d\u237ave@example.com', 'd\u{102a0}ve@example.com']) // APL ⍺, Carian 𐊠
      expect(as(user), user).toMatchObject({ action: 'allow', rule: undefined, reason: 'default' });
  });

  it('one denied statement denies the whole Query and is the one reported', () => {
    const d = run(spec, 'SELECT 1; SELECT * FROM secret.k; SELECT 2');
    expect(d.action).toBe('deny');
    expect(d.statements.map((s) => s.action)).toEqual(['allow', 'deny', 'allow']);
    expect(d.maxRows).toBeUndefined();
  });

  it('matches service accounts as namespace/name or name, and OIDC users', () => {
    expect(
      run(spec, 'INSERT INTO t VALUES (1)', { groups: [], namespace: 'ns', serviceAccount: 'writer' }).action,
    ).toBe('allow');
    expect(
      run(spec, 'INSERT INTO t VALUES (1)', { groups: [], namespace: 'other', serviceAccount: 'writer' }).action,
    ).toBe('deny');
    expect(run(spec, 'UPDATE t SET a = 1 WHERE id = 1', { groups: [], serviceAccount: 'writer-7' }).action).toBe(
      'allow',
    );
    expect(run(spec, 'DELETE FROM t WHERE id = 1', { groups: [], user: 'alice@example.com' })).toMatchObject({
      action: 'review',
      rule: 'oidc-user',
      message: 'pgwarden: statement held for review by rule "oidc-user"',
    });
  });

  it('guardrails deny even when a rule allows', () => {
    expect(run(spec, 'SELECT pg_sleep(1)')).toMatchObject({
      action: 'deny',
      reason: 'guardrail:blockedFunctions',
      rule: 'read',
    });
    const d = run(spec, 'UPDATE t SET a = 1', { groups: [], serviceAccount: 'writer-1' });
    expect(d).toMatchObject({ action: 'deny', reason: 'guardrail:requireWhere' });
    expect(d.message).toBe('pgwarden: statement denied by guardrail requireWhere: UPDATE without a WHERE clause');
  });

  it('dangerous operations need allowDangerous on the matching rule; DO with dynamic SQL needs a do rule', () => {
    const open = policy(`  defaultAction: allow
  rules:
    - {name: files, action: allow, statements: [select], functions: ["*.pg_read_file", "pg_catalog.*"], allowDangerous: [server-file-access]}
    - {name: do-blocks, action: allow, statements: [do, select], subjects: {groups: [ops]}}
`);
    expect(run(open, "SELECT pg_read_file('x')")).toMatchObject({ action: 'allow', rule: 'files' });
    // lo_import also writes a large object (an update), which rule "files" does not cover: the default applies,
    // and no rule allows the dangerous calls.
    expect(run(open, "SELECT pg_read_file('x'), lo_import('y')")).toMatchObject({
      action: 'deny',
      rule: undefined,
      reason: 'dangerous:server-file-access',
    });

    const doSql = "DO $$ BEGIN EXECUTE 'SELECT 1'; END $$";
    expect(run(open, doSql)).toMatchObject({ action: 'deny', reason: 'dangerous:dynamic-sql' });
    expect(run(open, doSql, { groups: ['ops'] })).toMatchObject({ action: 'allow', rule: 'do-blocks' });
    expect(run(open, 'SET ROLE postgres', { groups: ['ops'] })).toMatchObject({
      action: 'deny',
      reason: 'identity-change',
    });
  });

  it('dryrun rules and defaults let the statement through, marked', () => {
    const dry = policy(`  defaultAction: dryrun
  guardrails: {blockDDL: false, requireWhere: []}
`);
    expect(run(dry, 'DROP TABLE t')).toMatchObject({ action: 'dryrun', reason: 'default' });
    expect(run(dry, 'DROP TABLE t').message).toBe(
      'pgwarden: statement allowed in dry-run (would be denied) by the default action: no rule applies to this client',
    );
    expect(run(dry, "COPY t TO PROGRAM 'x'")).toMatchObject({ action: 'deny', reason: 'dangerous:copy-program' });
  });

  it('a default denial says what no rule covered, without literals', () => {
    const p = policy(`  rules:
    - {name: reads, action: allow, statements: [select], tables: ["public.*"], functions: ["pg_catalog.*"]}
    - {name: writes, action: allow, statements: [select, insert], tables: [public.log], functions: [pg_catalog.lower]}
    - {name: ops, action: allow, statements: [copy], subjects: {groups: [ops]}}
  guardrails: {blockDDL: false}
`);
    const message = (sql: string) => {
      const d = run(p, sql);
      expect(d).toMatchObject({ action: 'deny', reason: 'default', code: '42501' });
      expect(d.detail).toBe(d.message.replace('pgwarden: statement denied by the default action: ', ''));
      return d.message.replace('pgwarden: statement denied by the default action: ', '');
    };
    expect(message("COPY (SELECT 'secret-literal') TO STDOUT")).toBe(
      'statement kind "copy" is not allowed by any rule',
    );
    expect(run(p, 'COPY t TO STDOUT', { groups: ['ops'] }).action).toBe('allow');
    expect(message("SELECT * FROM hr.salaries WHERE name = 'secret-literal'")).toBe(
      'relation "hr.salaries" is not covered by any rule allowing select',
    );
    expect(message("SELECT pg_sleep(1), app.f('secret-literal') FROM log")).toBe(
      'function "app.f" is not in the functions list of any rule allowing select on these relations',
    );
    // Only one rule allows the kinds: what it lacks.
    expect(message('INSERT INTO log SELECT * FROM t')).toBe('relation "public.t" is not covered by rule "writes"');
    expect(message('INSERT INTO log SELECT upper(x) FROM log')).toBe(
      'function "pg_catalog.upper" is not in rule "writes"\'s functions list',
    );
    // The one rule allowing the kinds on these relations: what it lacks.
    expect(message('SELECT * FROM log JOIN t ON true WHERE f(1)')).toBe(
      'function "public.f" is not in rule "reads"\'s functions list',
    );
  });

  it('caches per analysis and subject object, and the cached answer is the same', () => {
    const s = createSessionState();
    const subject: Subject = { groups: [] };
    const a = decide(spec, analyzeSql('SELECT * FROM t', s), subject);
    expect(decide(spec, analyzeSql('SELECT * FROM t', s), subject)).toBe(a);
    expect(decide(spec, analyzeSql('SELECT * FROM t', s), { groups: [] })).toEqual(a);
  });
});

describe('cursors', () => {
  const spec = policy(`  rules:
    - {name: cursors, action: allow, statements: [cursor]}
    - {name: reads, action: allow, statements: [cursor, select], tables: ["public.orders"]}
`);

  it('judges DECLARE by its query: a rule for cursor alone does not let it read any table', () => {
    expect(run(spec, 'DECLARE c CURSOR FOR SELECT * FROM api_keys; FETCH ALL FROM c')).toMatchObject({
      action: 'deny',
      reason: 'default',
    });
    const [a] = analyzeSql(
      'DECLARE c CURSOR WITH HOLD FOR SELECT * FROM api_keys FOR UPDATE',
      createSessionState(),
    ).statements;
    expect(a).toMatchObject({ kind: 'cursor', kinds: ['cursor', 'select', 'lock'] });
    expect(a.relations.map((r) => `${r.schema}.${r.name}`)).toEqual(['public.api_keys']);
    expect(run(spec, 'DECLARE c CURSOR FOR SELECT * FROM orders; FETCH 10 FROM c; CLOSE c')).toMatchObject({
      action: 'allow',
      rule: 'reads',
    });
    expect(run(spec, 'FETCH ALL FROM c')).toMatchObject({ action: 'allow', rule: 'cursors' });
  });
});

describe('PL/pgSQL expressions in every place they hide', () => {
  const spec = policy(`  defaultAction: allow
  rules:
    - {name: no-hr, action: deny, tables: ["hr.*"]}
`);
  const block = (decl: string, body: string) => `DO $$ DECLARE ${decl} BEGIN ${body} END $$`;

  it('analyses the subscripts of an assignment target, not only its value', () => {
    const roleChange = block('a text[];', "a[length(set_config('role','other_priv',false))] := 'x';");
    expect(run(spec, roleChange)).toMatchObject({ action: 'deny', reason: 'identity-change' });
    for (const sql of [
      block('a text[];', "a[(SELECT length(set_config('x.y', emp, false)) FROM hr.salaries LIMIT 1)] := 'x';"),
      block('a int[];', 'a[1:(SELECT count(*) FROM hr.salaries)] = ARRAY[1];'),
      block('a int[]; b int[];', 'a[f(x := (SELECT 1 FROM hr.salaries))] := 1;'),
      // A comment that would hide the real value if the text were split at the first `:=`.
      block('a int;', "a -- := '\n = (SELECT 1 FROM hr.salaries) -- '\n;"),
      block('r record;', 'SELECT 1 AS f INTO r; r.f := (SELECT 1 FROM hr.salaries);'),
      block('a int;', 'a := x FROM hr.salaries;'),
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'deny', rule: 'no-hr' });
    }
    expect(run(spec, block('a text[];', "a[2] := 'x';")).action).toBe('allow');
  });

  it('analyses conditions, loop sources, RAISE and ASSERT, cursor and CALL arguments', () => {
    const hr = '(SELECT count(*) FROM hr.salaries)';
    for (const sql of [
      block('i int;', `LOOP EXIT WHEN ${hr} > 0; END LOOP;`),
      block('i int;', `FOR i IN 1..3 LOOP CONTINUE WHEN ${hr} > 0; END LOOP;`),
      block('i int := 1;', `CASE WHEN ${hr} > 0 THEN NULL; ELSE NULL; END CASE;`),
      block('', `RAISE NOTICE 'x' USING DETAIL = ${hr}::text;`),
      block('', `ASSERT ${hr} = 0;`),
      block('', `PERFORM ${hr};`),
      block('', `CALL p(${hr});`),
      block('x int[];', `FOREACH x SLICE 1 IN ARRAY (SELECT array_agg(ARRAY[1]) FROM hr.salaries) LOOP END LOOP;`),
      block('c refcursor;', 'OPEN c FOR SELECT * FROM hr.salaries;'),
      block(`c CURSOR FOR SELECT * FROM hr.salaries;`, 'OPEN c;'),
      block(`n int := ${hr};`, 'NULL;'),
      block('n int;', `IF ${hr} > 0 THEN COMMIT AND CHAIN; END IF;`),
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'deny', rule: 'no-hr' });
    }
    for (const sql of [
      block('c refcursor;', "OPEN c FOR EXECUTE 'SELECT 1';"),
      block('n int;', "GET DIAGNOSTICS n = ROW_COUNT; EXECUTE 'SELECT 1';"),
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'deny', reason: 'dangerous:dynamic-sql' });
    }
  });
});

describe('functions that run SQL given as text', () => {
  const spec = policy(`  defaultAction: allow
  rules:
    - {name: no-hr, action: deny, tables: ["hr.*"]}
`);

  it('analyse the SQL argument of ts_rewrite, ts_stat and query_to_xml*, and deny what they cannot see', () => {
    for (const sql of [
      "select ts_rewrite('a'::tsquery, $$select 'a'::tsquery, quote_literal(emp||':'||salary)::tsquery from hr.salaries$$)",
      "SELECT ts_stat('SELECT to_tsvector(note) FROM hr.salaries')",
      "SELECT * FROM ts_stat('SELECT to_tsvector(note) FROM hr.salaries', 'ab')",
      "SELECT query_to_xml('SELECT * FROM hr.salaries', true, false, '')",
      "SELECT query_to_xmlschema('SELECT * FROM hr.salaries', true, false, '')",
      "SELECT query_to_xml_and_xmlschema('SELECT * FROM hr.salaries', true, false, '')",
      "SELECT get_raw_page('hr.salaries', 0)",
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'deny', rule: 'no-hr' });
    }
    for (const sql of [
      "SELECT ts_rewrite('a'::tsquery, current_setting('x.q'))",
      "SELECT cursor_to_xml('c', 10, true, false, '')",
      "SELECT cursor_to_xmlschema('c', true, false, '')",
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'deny', reason: 'dangerous:dynamic-sql' });
    }
    // The three-tsquery form rewrites with constants and runs no SQL.
    expect(run(spec, "SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)").action).toBe('allow');
    expect(run(spec, "SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM public.aliases')").action).toBe('allow');
  });
});

describe('settings that change how PostgreSQL reads later statements', () => {
  const spec = policy(`  rules:
    - {name: housekeeping, action: allow, statements: [set, select, do]}
`);

  it('denies standard_conforming_strings off and client-only client encodings, whatever allows set', () => {
    for (const sql of [
      'SET standard_conforming_strings = off',
      "SET SESSION standard_conforming_strings TO 'false'",
      'SET LOCAL Standard_Conforming_Strings = 0',
      "SET standard_conforming_strings = 'of'",
      "SELECT set_config('standard_conforming_strings', 'off', false)",
      "SELECT set_config('standard_conforming_strings', lower('OFF'), false)",
      "SELECT 1 WHERE length(set_config('Standard_Conforming_Strings', 'no', true)) > 0",
      "SET NAMES 'SJIS'",
      'SET client_encoding = sjis',
      "SET client_encoding TO 'Shift_JIS'",
      "SET client_encoding = 'shift-jis-2004'",
      "SET client_encoding = 'MS_Kanji'",
      "SET client_encoding = 'BIG5'",
      "SET client_encoding = 'windows-950'",
      "SET client_encoding = 'gbk'",
      "SET client_encoding = 'WIN936'",
      "SET client_encoding = 'uhc'",
      "SET client_encoding = 'GB18030'",
      "SET client_encoding = 'johab'",
      "SET client_encoding = 'no-such-encoding'",
      "SELECT set_config('client_encoding', 'sjis', false)",
      "SELECT set_config('client_encoding', current_setting('x.y'), false)",
      "DO $$ BEGIN SET client_encoding = 'big5'; END $$",
      "DO $$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); END $$",
      "DO $$ DECLARE a text[]; BEGIN a[1] := set_config('client_encoding', 'gbk', false); END $$",
      'ALTER ROLE agent SET standard_conforming_strings = off',
      "ALTER DATABASE d SET client_encoding = 'sjis'",
      'ALTER SYSTEM SET standard_conforming_strings = off',
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET client_encoding = 'sjis' AS 'select 1'",
    ]) {
      const d = run(spec, `SELECT 1; ${sql}`);
      expect(d, sql).toMatchObject({ action: 'deny', reason: 'unsafe-setting', code: '42501' });
      expect(d.message, sql).toMatch(/^pgwarden: statement denied: .* is never allowed$/);
    }
  });

  it('lets the safe values, RESET and DEFAULT of those settings through', () => {
    for (const sql of [
      'SET standard_conforming_strings = on',
      "SET standard_conforming_strings TO 'true'",
      'SET standard_conforming_strings = 1',
      'RESET standard_conforming_strings',
      'SET standard_conforming_strings TO DEFAULT',
      "SELECT set_config('standard_conforming_strings', 'on', false)",
      "SET client_encoding = 'UTF8'",
      "SET NAMES 'utf-8'",
      "SET client_encoding = 'LATIN1'",
      "SET client_encoding = 'EUC_JP'",
      "SET client_encoding = 'SQL_ASCII'",
      'RESET client_encoding',
      "SELECT set_config('client_encoding', 'win1252', false)",
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'allow', rule: 'housekeeping' });
    }
  });

  it('allows returning search_path to its default (the pin the sidecar gives at login); SET to a list works', () => {
    for (const sql of [
      'RESET search_path',
      'SET search_path TO DEFAULT',
      'SET LOCAL search_path TO DEFAULT',
      'RESET ALL',
      'DO $$ BEGIN RESET search_path; END $$',
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'allow' });
    }
    expect(run(spec, 'SET search_path TO hr, public')).toMatchObject({ action: 'allow' });
    expect(run(spec, 'RESET statement_timeout')).toMatchObject({ action: 'allow' });
  });
});

describe('guardrails.maxRowsAffected', () => {
  const spec = policy(`  defaultAction: allow
  guardrails: {maxRowsAffected: 5, blockDDL: false}
`);

  it('sets the cap on a Query that writes, and only then', () => {
    expect(run(spec, 'UPDATE t SET a = 1 WHERE id = 1')).toMatchObject({ action: 'allow', maxAffected: 5 });
    expect(run(spec, 'INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2')).toMatchObject({
      maxAffected: 5,
    });
    expect(run(spec, 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1')).toMatchObject({
      maxAffected: 5,
    });
    expect(run(spec, 'SELECT * FROM t').maxAffected).toBeUndefined();
    // Calls of PostgreSQL's own functions cannot write rows; a user-defined function, a procedure or a DO block may.
    expect(run(spec, 'SELECT lower(a), count(*), now() FROM t').maxAffected).toBeUndefined();
    expect(run(spec, 'SELECT archive_orders(30)').maxAffected).toBe(5);
    expect(run(spec, 'SELECT * FROM t WHERE ops.check_row(t.id)').maxAffected).toBe(5);
    expect(run(spec, 'CALL archive_orders(30)').maxAffected).toBe(5);
    expect(run(spec, 'DO $$ BEGIN PERFORM 1; END $$').maxAffected).toBe(5);
    expect(run(spec, 'COPY (SELECT archive_orders(30)) TO STDOUT').maxAffected).toBeUndefined();
    expect(run(spec, 'SELECT 1; UPDATE t SET a = 1 WHERE id = 2').maxAffected).toBe(5);
    expect(run(spec, 'BEGIN').maxAffected).toBeUndefined();
    expect(run(spec, 'COPY t TO STDOUT').action).toBe('allow');
  });

  it('caps writes the CommandComplete tag does not count (the proxy counts them from the statistics); denies COPY FROM', () => {
    for (const sql of [
      'WITH d AS (DELETE FROM t WHERE id > 0 RETURNING 1) SELECT count(*) FROM d',
      'EXPLAIN ANALYZE UPDATE t SET a = 1 WHERE id = 1',
      'DO $$ BEGIN UPDATE t SET a = 1 WHERE id = 1; END $$',
      "SELECT nextval('s')",
    ]) {
      expect(run(spec, sql), sql).toMatchObject({ action: 'allow', maxAffected: 5 });
    }
    const d = run(spec, 'COPY t FROM STDIN');
    expect(d).toMatchObject({ action: 'deny', code: '42501', reason: 'guardrail:maxRowsAffected' });
    expect(d.message).toMatch(
      /^pgwarden: statement denied by guardrail maxRowsAffected: the rows a COPY FROM statement/,
    );
    expect(d.maxAffected).toBeUndefined();
  });

  it('denies TRUNCATE, whose rows nothing counts, also inside a DO block; not as a stored definition', () => {
    const noWhere = policy(`  defaultAction: allow
  guardrails: {maxRowsAffected: 5, blockDDL: false, requireWhere: []}
`);
    for (const sql of [
      'TRUNCATE orders',
      'TRUNCATE TABLE orders, items CASCADE',
      'SELECT 1; TRUNCATE orders',
      'DO $$ BEGIN TRUNCATE orders; END $$',
    ]) {
      const d = run(noWhere, sql);
      expect(d, sql).toMatchObject({ action: 'deny', reason: 'guardrail:maxRowsAffected', code: '42501' });
      expect(d.message).toMatch(/^pgwarden: statement denied by guardrail maxRowsAffected: TRUNCATE removes rows/);
    }
    expect(run(noWhere, 'CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$TRUNCATE orders$$').action).toBe('allow');
    expect(run(noWhere, 'DELETE FROM orders')).toMatchObject({ action: 'allow', maxAffected: 5 });
    expect(run(policy('  defaultAction: allow\n  guardrails: {requireWhere: []}\n'), 'TRUNCATE orders').action).toBe(
      'allow',
    );
  });

  it('denies transaction control in one Query with a write, not on its own or with reads only', () => {
    expect(run(spec, 'BEGIN; UPDATE t SET a = 1 WHERE id = 1; COMMIT')).toMatchObject({
      action: 'deny',
      reason: 'guardrail:maxRowsAffected',
    });
    expect(run(spec, 'BEGIN; SELECT 1; COMMIT').action).toBe('allow');
    expect(run(spec, 'COMMIT').action).toBe('allow');
  });

  it('leaves a policy without it alone', () => {
    const plain = policy('  defaultAction: allow\n');
    expect(run(plain, 'WITH d AS (DELETE FROM t WHERE id > 0 RETURNING 1) SELECT count(*) FROM d')).toMatchObject({
      action: 'allow',
    });
    expect(run(plain, 'UPDATE t SET a = 1 WHERE id = 1').maxAffected).toBeUndefined();
  });
});
