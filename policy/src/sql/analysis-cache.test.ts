import { beforeAll, describe, expect, it } from 'vitest';
import { ANALYSIS_CACHE_MAX_ENTRIES, analysisCacheSize, analyzeSql, clearAnalysisCache } from './analyze-sql.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

beforeAll(() => initSqlParser());

describe('analysis cache', () => {
  it('stays bounded and evicts the oldest entry first, across resolution keys', () => {
    clearAnalysisCache();
    const pub = createSessionState();
    const app = createSessionState({ searchPath: ['app'] });
    const firstPub = analyzeSql('SELECT * FROM t', pub);
    const firstApp = analyzeSql('SELECT * FROM t', app);
    expect(analyzeSql('SELECT * FROM t', pub)).toBe(firstPub);
    expect(firstApp).not.toBe(firstPub); // the same text resolves differently under another search_path
    for (let i = 2; i < ANALYSIS_CACHE_MAX_ENTRIES; i++) analyzeSql(`SELECT ${i}`, i % 2 ? pub : app);
    expect(analysisCacheSize()).toBe(ANALYSIS_CACHE_MAX_ENTRIES);

    analyzeSql('SELECT -1', pub); // evicts the oldest: the first text under `pub`
    expect(analysisCacheSize()).toBe(ANALYSIS_CACHE_MAX_ENTRIES);
    expect(analyzeSql('SELECT * FROM t', app)).toBe(firstApp);
    const again = analyzeSql('SELECT * FROM t', pub); // a miss, which evicts the first text under `app`
    expect(again).not.toBe(firstPub);
    expect(again).toEqual(firstPub);
    expect(analyzeSql('SELECT * FROM t', app)).not.toBe(firstApp);
    expect(analysisCacheSize()).toBe(ANALYSIS_CACHE_MAX_ENTRIES);

    clearAnalysisCache();
    expect(analysisCacheSize()).toBe(0);
    expect(analyzeSql('SELECT -1', pub)).not.toBe(analyzeSql('SELECT -1', app));
    expect(analysisCacheSize()).toBe(2);
  });
});
