import { describe, expect, it } from 'vitest';
import type { CatalogRelation } from './catalog-snapshot.js';
import { emptyLineage } from './lineage.js';
import { catalogFirst, onSearchPath, parseSearchPath, SearchPathTracker } from './search-path.js';
import type { MaskAnalysis } from './statement-analysis.js';

const rel = (schema: string): CatalogRelation => ({ oid: 1, schema, name: 't', kind: 'r', columns: [] });
const stmt = (extra: Partial<MaskAnalysis>): MaskAnalysis => ({
  kind: 'SelectStmt',
  returnsRows: true,
  outputs: [],
  predicate: emptyLineage(),
  written: emptyLineage(),
  ...extra,
});

describe('parseSearchPath', () => {
  it('splits a value as PostgreSQL does, or gives up', () => {
    expect(parseSearchPath('"public"')).toEqual(['public']);
    expect(parseSearchPath('App, "Odd Name" ,  public')).toEqual(['app', 'Odd Name', 'public']);
    expect(parseSearchPath('')).toEqual([]);
    // The schema `$user` means depends on the role in effect.
    expect(parseSearchPath('"$user", public')).toBeUndefined();
    // A quote inside a name, or a comma inside quotes, which a split on commas cannot follow.
    expect(parseSearchPath('"a""b"')).toBeUndefined();
    expect(parseSearchPath('"a,b"')).toBeUndefined();
    expect(parseSearchPath('a b')).toBeUndefined();
  });
});

describe('onSearchPath', () => {
  const all = [rel('one'), rel('two'), rel('pg_catalog')];
  it('takes what each path reaches first, pg_catalog first unless the path names it', () => {
    expect(onSearchPath(all.slice(0, 2), [['two', 'one']]).map((r) => r.schema)).toEqual(['two']);
    expect(onSearchPath(all.slice(0, 2), [['one'], ['two']]).map((r) => r.schema)).toEqual(['one', 'two']);
    expect(onSearchPath(all, [['two']]).map((r) => r.schema)).toEqual(['pg_catalog']);
    expect(onSearchPath(all, [['two', 'pg_catalog']]).map((r) => r.schema)).toEqual(['two']);
  });
  it('keeps every candidate where no path is known or one reaches none', () => {
    expect(onSearchPath(all, undefined)).toEqual(all);
    expect(onSearchPath(all.slice(0, 2), [['two'], ['elsewhere']])).toEqual(all.slice(0, 2));
  });
});

describe('SearchPathTracker', () => {
  it('starts from the login path, adds each SET, and forgets on what may change it unseen', () => {
    const t = new SearchPathTracker('one');
    expect(t.paths).toEqual([['one']]);
    expect(catalogFirst(t.paths)).toBe(true);
    t.observe([stmt({ kind: 'VariableSetStmt', searchPath: ['two', 'pg_catalog'] })]);
    expect(t.paths).toEqual([['one'], ['two', 'pg_catalog']]);
    expect(catalogFirst(t.paths)).toBe(false);
    for (const forget of [{ setsConfig: true }, { opaque: true }, { searchPath: 'unknown' as const }]) {
      const u = new SearchPathTracker('one');
      u.observe([stmt(forget)]);
      expect(u.paths).toBeUndefined();
      // Forgotten for good: a later SET does not make it known again.
      u.observe([stmt({ searchPath: ['one'] })]);
      expect(u.paths).toBeUndefined();
    }
    expect(new SearchPathTracker(undefined).paths).toBeUndefined();
  });

  it('forgets past 16 paths, so a client cannot grow its session state without bound', () => {
    const t = new SearchPathTracker('p0');
    for (let i = 1; i < 16; i++) t.observe([stmt({ searchPath: [`p${i}`] })]);
    expect(t.paths).toHaveLength(16);
    t.observe([stmt({ searchPath: ['p0'] })]);
    expect(t.paths).toHaveLength(16);
    t.observe([stmt({ searchPath: ['p16'] })]);
    expect(t.paths).toBeUndefined();
  });
});
