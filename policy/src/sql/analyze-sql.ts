import { type AnalysisContext, applyEffect, type SessionEffect, StatementFacts } from './analysis-context.js';
import type { SqlAnalysis, StatementAnalysis } from './analysis-types.js';
import { parseSql } from './parser.js';
import type { SessionState } from './session-state.js';
import { buildAnalysis } from './statement-analysis.js';
import { walkStatementNode } from './statement-handlers.js';
import { kindOfNode, unwrap } from './statement-kind.js';
import { textSlicer } from './statement-text.js';
import { EMPTY_SCOPE } from './statement-walker.js';

interface CacheEntry {
  analysis: SqlAnalysis;
  effects: SessionEffect[];
}

/**
 * Bounded cache of analyses: resolution key (search_path candidates, role) → text → entry. Eviction is FIFO
 * rather than LRU: a hit then costs one string-keyed lookup and no reordering, which keeps the cached path in the
 * low microseconds. Insertion order lives in a ring of (key, text) pairs: finding the oldest entry by iterating a
 * Map walks over every deleted slot before it, which grew with each eviction.
 */
export const ANALYSIS_CACHE_MAX_ENTRIES = 8192;
const CACHE_MAX_SQL_LENGTH = 16384;
/**
 * Admission on second sight (TinyLFU's "doorkeeper"): a text enters the cache the second time it is analysed under
 * the same resolution key. Agents often send one-off statements with their literals inline; admitting each would
 * evict the repeated statements the cache exists for and keep ~1.6 KB per one-off alive long enough to be promoted
 * to V8's old generation. Remembering only the text costs a fraction of that, and a repeated statement pays one
 * extra parse. Measured (policy/bench/decide-steady.mjs): uncached 200-char SELECT −2 µs, the CTE case −7 µs. Cleared when full, as TinyLFU resets its doorkeeper.
 */
const DOORKEEPER_MAX_ENTRIES = 8192;
const seenOnce = new Set<string>();
const cache = new Map<string, Map<string, CacheEntry>>();
let cacheEntries = 0;
const ringKeys: string[] = new Array(ANALYSIS_CACHE_MAX_ENTRIES).fill('');
const ringTexts: string[] = new Array(ANALYSIS_CACHE_MAX_ENTRIES).fill('');
let ringStart = 0;

export function clearAnalysisCache(): void {
  cache.clear();
  seenOnce.clear();
  // The ring only pins strings in the slots it used: an empty cache has nothing to release.
  if (cacheEntries > 0) {
    ringKeys.fill('');
    ringTexts.fill('');
  }
  cacheEntries = 0;
  ringStart = 0;
}

export function analysisCacheSize(): number {
  return cacheEntries;
}

function evictOldest(): void {
  const key = ringKeys[ringStart];
  const inner = cache.get(key);
  if (inner !== undefined) {
    inner.delete(ringTexts[ringStart]);
    if (inner.size === 0) cache.delete(key);
  }
  cacheEntries--;
  ringStart = (ringStart + 1) % ANALYSIS_CACHE_MAX_ENTRIES;
}

function remember(key: string, sql: string, entry: CacheEntry): void {
  if (cacheEntries >= ANALYSIS_CACHE_MAX_ENTRIES) evictOldest();
  let inner = cache.get(key);
  if (inner === undefined) {
    inner = new Map();
    cache.set(key, inner);
  } else if (inner.has(sql)) {
    inner.set(sql, entry);
    return;
  }
  const slot = (ringStart + cacheEntries) % ANALYSIS_CACHE_MAX_ENTRIES;
  ringKeys[slot] = key;
  ringTexts[slot] = sql;
  inner.set(sql, entry);
  cacheEntries++;
}

/** Admission only: the text alone is the doorkeeper's key (the cache itself keys on resolution key and text). */
function admit(sql: string): boolean {
  if (seenOnce.delete(sql)) return true;
  if (seenOnce.size >= DOORKEEPER_MAX_ENTRIES) seenOnce.clear();
  seenOnce.add(sql);
  return false;
}

/**
 * Analyses one Query string (one or more statements) in the context of a session, updating the session state
 * (search_path candidates, prepared statements) as the statements would. The result is shared with the cache:
 * treat it as immutable. The result depends only on the text and the session's resolution key, except for
 * EXECUTE, which depends on the session's prepared statements and is never cached.
 */
export function analyzeSql(sql: string, state: SessionState): SqlAnalysis {
  const cacheable = sql.length <= CACHE_MAX_SQL_LENGTH;
  const key = state.resolutionKey;
  if (cacheable) {
    const hit = cache.get(key)?.get(sql);
    if (hit !== undefined) {
      for (const e of hit.effects) applyEffect(state, e);
      return hit.analysis;
    }
  }
  const run: AnalysisContext['run'] = { effects: [], usedPrepared: false };
  const analysis = analyzeUncached(sql, state, run);
  if (cacheable && !run.usedPrepared && admit(sql)) remember(key, sql, { analysis, effects: run.effects });
  return analysis;
}

function analyzeUncached(sql: string, state: SessionState, run: AnalysisContext['run']): SqlAnalysis {
  try {
    return analyzeParsed(sql, state, run);
  } catch (e) {
    if ((e as { code?: string }).code === 'PGW_SQL_PARSER_NOT_LOADED') throw e;
    // A tree the walker cannot handle (nesting beyond the JS stack) must deny, never crash the session.
    run.usedPrepared = true; // not cached: the failure may depend on the stack depth at the call site
    return {
      ok: false,
      error: { message: `statement too complex to analyse (${(e as Error).name})`, code: '54001' },
      statements: [],
    };
  }
}

function analyzeParsed(sql: string, state: SessionState, run: AnalysisContext['run']): SqlAnalysis {
  const parsed = parseSql(sql);
  if (!parsed.ok) return { ok: false, error: { ...parsed.error, code: '42601' }, statements: [] };
  const slice = textSlicer(sql, parsed.stmts.length);
  const statements: StatementAnalysis[] = parsed.stmts.map((raw) => {
    const [type, body] = unwrap(raw.stmt);
    const facts = new StatementFacts();
    const text = slice(raw);
    const ctx: AnalysisContext = { state, facts, mode: 'exec', depth: 0, run, text };
    walkStatementNode(type, body, EMPTY_SCOPE, ctx);
    let kind = kindOfNode(type, body);
    if (type === 'ExecuteStmt') {
      const variants = state.preparedVariants(String(body.name));
      if (variants?.length) kind = variants[0].kind;
    }
    return buildAnalysis(facts, text, kind);
  });
  return { ok: true, statements };
}
