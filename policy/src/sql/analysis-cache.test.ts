import { beforeAll, describe, expect, it } from 'vitest';
import { ANALYSIS_CACHE_MAX_ENTRIES, analysisCacheSize, analyzeSql, clearAnalysisCache } from './analyze-sql.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

beforeAll(() => initSqlParser());

/** The cache admits a text the second time it is analysed: analyse twice to cache. */
function analyzeTwice(sql: string, state: ReturnType<typeof createSessionState>) {
  analyzeSql(sql, state);
  return analyzeSql(sql, state);
}

describe('analysis cache', () => {
  it('admits a text on its second analysis, not its first (one-off statements do not evict repeated ones)', () => {
    clearAnalysisCache();
    const s = createSessionState();
    const first = analyzeSql('SELECT 42 FROM t', s);
    expect(analysisCacheSize()).toBe(0);
    const second = analyzeSql('SELECT 42 FROM t', s);
    expect(second).not.toBe(first);
    expect(second).toEqual(first);
    expect(analysisCacheSize()).toBe(1);
    expect(analyzeSql('SELECT 42 FROM t', s)).toBe(second);
    for (let i = 0; i < 3 * ANALYSIS_CACHE_MAX_ENTRIES; i++) analyzeSql(`SELECT ${i} FROM t`, s);
    expect(analysisCacheSize()).toBe(1);
    expect(analyzeSql('SELECT 42 FROM t', s)).toBe(second);
  });

  it('stays bounded and evicts the oldest entry first, across resolution keys', () => {
    clearAnalysisCache();
    const pub = createSessionState();
    const app = createSessionState({ searchPath: ['app'] });
    const firstPub = analyzeTwice('SELECT * FROM t', pub);
    const firstApp = analyzeTwice('SELECT * FROM t', app);
    expect(analyzeSql('SELECT * FROM t', pub)).toBe(firstPub);
    expect(firstApp).not.toBe(firstPub); // the same text resolves differently under another search_path
    for (let i = 2; i < ANALYSIS_CACHE_MAX_ENTRIES; i++) analyzeTwice(`SELECT ${i}`, i % 2 ? pub : app);
    expect(analysisCacheSize()).toBe(ANALYSIS_CACHE_MAX_ENTRIES);

    analyzeTwice('SELECT -1', pub); // evicts the oldest: the first text under `pub`
    expect(analysisCacheSize()).toBe(ANALYSIS_CACHE_MAX_ENTRIES);
    expect(analyzeSql('SELECT * FROM t', app)).toBe(firstApp);
    const again = analyzeTwice('SELECT * FROM t', pub); // a miss admitted, which evicts the first text under `app`
    expect(again).not.toBe(firstPub);
    expect(again).toEqual(firstPub);
    expect(analyzeSql('SELECT * FROM t', app)).not.toBe(firstApp);
    expect(analysisCacheSize()).toBe(ANALYSIS_CACHE_MAX_ENTRIES);

    clearAnalysisCache();
    expect(analysisCacheSize()).toBe(0);
    expect(analyzeTwice('SELECT -1', pub)).not.toBe(analyzeTwice('SELECT -1', app));
    expect(analysisCacheSize()).toBe(2);
  });
});
