import { beforeAll, describe, expect, it } from 'vitest';
import { buildCatalogSnapshot, type CatalogRow, type CatalogSnapshot } from './catalog-snapshot.js';
import { colKey, type Lineage } from './lineage.js';
import { initMaskingParser } from './sql-parse.js';
import { analyzeForMasking, type NamedOutputs } from './statement-analysis.js';

// Name resolution as PostgreSQL scopes it: which WITH a relation name means, and which column an alias's column list
// or a join's output order makes a name stand for. Outputs are listed as the base columns they are computed from.

function table(oid: number, schema: string, name: string, cols: string[]): CatalogRow[] {
  return cols.map((c, i) => ({ oid, schema, name, kind: 'r', attnum: i + 1, attname: c, atttypid: 25, viewdef: null }));
}

let cat: CatalogSnapshot;
const named: NamedOutputs = { cursor: () => undefined, prepared: () => undefined };
const P = (c: string) => colKey('public', 'people', c);
const A = (c: string) => colKey('alt', 'people', c);
const T = (c: string) => colKey('public', 'tags', c);

beforeAll(async () => {
  await initMaskingParser();
  cat = buildCatalogSnapshot(
    [
      ...table(200, 'public', 'people', ['id', 'name', 'ssn']),
      // The same name in another schema, its columns in another order: an unqualified `people` may be either.
      ...table(201, 'alt', 'people', ['ssn', 'id']),
      ...table(202, 'public', 'tags', ['id', 'label']),
    ],
    [],
  );
});

const one = (sql: string) => analyzeForMasking(sql, cat, named)[0];
const show = (l: Lineage) => (l.unknown ? 'UNKNOWN' : [...l.cols].sort().join(','));
const outs = (sql: string) => one(sql).outputs.map((o) => show(o.lin));

describe('WITH scoping', () => {
  it('the innermost WITH of a name wins, both ways round', () => {
    expect(
      outs(
        'WITH c AS (SELECT ssn FROM public.people) SELECT upper(s.id) FROM (WITH c AS (SELECT id FROM public.people) SELECT * FROM c) s',
      ),
    ).toEqual([P('id')]);
    expect(
      outs(
        'WITH c AS (SELECT id AS v FROM public.people) SELECT upper(s.v) FROM (WITH c AS (SELECT ssn AS v FROM public.people) SELECT * FROM c) s',
      ),
    ).toEqual([P('ssn')]);
    // From a scalar subquery and from a subquery in WHERE, an outer CTE is seen unless an inner one shadows it.
    expect(
      outs(
        'WITH c AS (SELECT ssn AS v FROM public.people) SELECT (WITH c AS (SELECT id AS v FROM public.people) SELECT upper(v) FROM c LIMIT 1), (SELECT upper(v) FROM c LIMIT 1)',
      ),
    ).toEqual([P('id'), P('ssn')]);
    const where = one(
      'WITH c AS (SELECT ssn AS v FROM public.people) SELECT label FROM public.tags WHERE label IN (SELECT v FROM c)',
    );
    expect(show(where.predicate)).toBe([P('ssn'), T('label')].sort().join(','));
  });

  it('a member sees the members before it, and a later one only with RECURSIVE', () => {
    expect(
      outs('WITH a AS (SELECT ssn AS v FROM public.people), b AS (SELECT upper(v) AS v FROM a) SELECT upper(v) FROM b'),
    ).toEqual([P('ssn')]);
    // Without RECURSIVE, `tags` in the first member is the table, not the member defined after it.
    expect(
      outs(
        'WITH a AS (SELECT upper(label) AS v FROM tags), tags AS (SELECT ssn AS label FROM public.people) SELECT v FROM a',
      ),
    ).toEqual([T('label')]);
    // With RECURSIVE it is the later member: PostgreSQL orders the members by their references.
    expect(
      outs(
        'WITH RECURSIVE a AS (SELECT upper(label) AS v FROM tags), tags AS (SELECT ssn AS label FROM public.people) SELECT v FROM a',
      ),
    ).toEqual([P('ssn')]);
    expect(
      outs(
        'WITH RECURSIVE a AS (SELECT upper(label) AS v FROM tags), tags(label) AS (SELECT ssn FROM public.people UNION ALL SELECT label FROM tags WHERE false) SELECT v FROM a',
      ),
    ).toEqual([P('ssn')]);
    // A member never sees itself without RECURSIVE: this `tags` is the table.
    expect(outs('WITH tags AS (SELECT upper(label) AS label FROM tags) SELECT label FROM tags')).toEqual([T('label')]);
  });
});

describe('column lists', () => {
  it('rename each candidate relation’s own first columns', () => {
    // In alt.people the first column is ssn: `o.a` may be it.
    expect(outs('SELECT upper(o.a), upper(a) FROM people o(a)')).toEqual([
      [P('id'), A('ssn')].sort().join(','),
      [P('id'), A('ssn')].sort().join(','),
    ]);
    expect(outs('SELECT upper(o.a), upper(o.ssn), upper(o.name) FROM public.people o(a)')).toEqual([
      P('id'),
      P('ssn'),
      P('name'),
    ]);
    // A name a column list took from one candidate and not the other may be PostgreSQL's call of a function on the
    // whole row there (`o.ssn` is ssn(o) when o is alt.people).
    const whole = [P('id'), P('name'), P('ssn'), A('id'), A('ssn')].sort().join(',');
    expect(outs('SELECT upper(o.ssn) FROM people o(a)')).toEqual([whole]);
  });

  it('of subqueries and CTEs rename outputs by position and keep the rest', () => {
    expect(outs('SELECT upper(s.a), upper(s.ssn) FROM (SELECT id, ssn FROM public.people) s(a)')).toEqual([
      P('id'),
      P('ssn'),
    ]);
    expect(outs('WITH w AS (SELECT id, ssn FROM public.people) SELECT upper(x.a), upper(ssn) FROM w x(a)')).toEqual([
      P('id'),
      P('ssn'),
    ]);
  });

  it('of a join follow its output order: USING and NATURAL columns first, once', () => {
    // (alt.people JOIN tags USING (id)) gives id, ssn, label: b is ssn.
    expect(
      outs('SELECT upper(j.b), upper(j.c) FROM (alt.people p JOIN public.tags t USING (id)) AS j(a, b, c)'),
    ).toEqual([A('ssn'), T('label')]);
    expect(outs('SELECT upper(j.b) FROM (alt.people p NATURAL JOIN public.tags t) AS j(a, b)')).toEqual([A('ssn')]);
    // Nested: the inner join's own order, then the outer one's.
    expect(
      outs(
        'SELECT upper(j.d) FROM ((alt.people p JOIN public.tags t USING (id)) AS k JOIN public.people q ON true) AS j(a, b, c, d, e)',
      ),
    ).toEqual([P('id')]);
    // A nested join's alias renames what the outer join matches and orders.
    expect(
      outs(
        'SELECT upper(j.a), upper(j.b) FROM ((alt.people p JOIN public.tags t ON true) AS k(name) JOIN public.people q USING (name)) AS j(a, b)',
      ),
    ).toEqual([A('ssn'), A('id')]);
    // Without USING, the left side's columns then the right side's.
    expect(outs('SELECT upper(j.b), upper(j.c) FROM (alt.people p JOIN public.tags t ON true) AS j(a, b, c)')).toEqual([
      A('id'),
      T('id'),
    ]);
  });

  it('`*` over a join gives its columns once, in its order', () => {
    expect(outs('SELECT *, upper(label) FROM alt.people p JOIN public.tags t USING (id)')).toEqual([
      A('id'),
      A('ssn'),
      T('label'),
      T('label'),
    ]);
    expect(
      one('SELECT * FROM (alt.people p JOIN public.tags t USING (id)) AS j(a)').outputs.map((o) => o.name),
    ).toEqual(['a', 'ssn', 'label']);
    expect(outs('SELECT * FROM public.tags t, alt.people p NATURAL JOIN public.people q')).toEqual([
      T('id'),
      T('label'),
      A('ssn'),
      A('id'),
      P('name'),
    ]);
  });

  it('a join’s merged column is the side PostgreSQL takes it from (buildMergedJoinVar)', () => {
    // LEFT JOIN: the left side's; RIGHT JOIN: the right side's; FULL JOIN: COALESCE of both; an inner join of
    // columns of one type: the left side's.
    const merged = { LEFT: T('id'), RIGHT: A('id'), FULL: [T('id'), A('id')].sort().join(','), INNER: T('id') };
    for (const [kind, lin] of Object.entries(merged)) {
      expect(outs(`SELECT upper(j.id) FROM (public.tags t ${kind} JOIN alt.people p USING (id)) AS j`)).toEqual([lin]);
      // The same column through a USING alias, the join's `*` and an unaliased join's column list.
      expect(outs(`SELECT upper(x.id), upper(x) FROM public.tags t ${kind} JOIN alt.people p USING (id) AS x`)).toEqual(
        [lin, lin],
      );
      expect(outs(`SELECT * FROM public.tags t ${kind} JOIN alt.people p USING (id)`)[0]).toBe(lin);
    }
    // An inner join whose sides' types are not known to be one: PostgreSQL takes the right one where only the left
    // needs a coercion, so either.
    expect(
      outs('SELECT upper(x.id) FROM (SELECT label AS id FROM public.tags) s JOIN alt.people p USING (id) AS x'),
    ).toEqual([[T('label'), A('id')].sort().join(',')]);
    // A USING alias names the USING columns only: anything else on it is unknown (PostgreSQL: f(x), or an error).
    expect(outs('SELECT upper(x.label) FROM public.tags t JOIN alt.people p USING (id) AS x')).toEqual(['UNKNOWN']);
  });
});
