import { describe, expect, it } from 'vitest';
import { analysisCacheSize, analyzeSql } from './analyze-sql.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';
import { sqlAnalysisWarmedUp, warmUpSqlAnalysis } from './warm-up.js';

describe('warmUpSqlAnalysis', () => {
  it('leaves no warm-up entry in the analysis cache, runs once per process, and analysis works after it', async () => {
    await initSqlParser();
    analyzeSql('SELECT 1', createSessionState());
    // Test files share their worker's modules (vitest.config.ts): a sidecar another file started may have warmed up.
    const earlier = sqlAnalysisWarmedUp();
    const spent = await warmUpSqlAnalysis(1);
    if (earlier) expect(spent).toBe(0);
    else {
      expect(spent).toBeGreaterThan(0);
      expect(analysisCacheSize()).toBe(0);
    }
    expect(sqlAnalysisWarmedUp()).toBe(true);
    expect(await warmUpSqlAnalysis(1)).toBe(0);
    const a = analyzeSql('DELETE FROM public.orders', createSessionState());
    expect(a.statements[0]).toMatchObject({ kind: 'delete', writes: true });
  });
});
