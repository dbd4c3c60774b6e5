/**
 * Which relation an unqualified name is, by the session's search_path
 * (https://www.postgresql.org/docs/current/ddl-schemas.html#DDL-SCHEMAS-PATH): the first schema on the path holding a
 * relation of that name, pg_catalog searched first unless the path names it. The sidecar knows the path a session
 * started with only when the login gave it (the governed sidecar always pins one); a SET afterwards may fail or be
 * rolled back, so every path set since stays possible, and code that may call set_config() makes it unknown.
 */
import type { CatalogRelation } from './catalog-snapshot.js';
import type { MaskAnalysis } from './statement-analysis.js';

const MAX_PATHS = 16;

/** Every search_path that may be in effect (schema names, in order); undefined when not known. */
export type SearchPaths = ReadonlyArray<readonly string[]>;

/** What the analysis knows of a session's search_path. */
export interface SessionPaths {
  /** Unqualified relation names resolve through these (onSearchPath). */
  paths?: SearchPaths;
  /** Every path searches pg_catalog first (see reachableUserOperators). */
  catalogFirst?: boolean;
}

/** Whether every path searches pg_catalog first: it does not name it, or names it first. False when not known. */
export function catalogFirst(paths: SearchPaths | undefined): boolean {
  return paths?.every((p) => p.indexOf('pg_catalog') <= 0) === true;
}

/**
 * The relations among `candidates` (one name, several schemas) that some path reaches first. All of them where a path
 * reaches none (PostgreSQL's error) or none is known.
 */
export function onSearchPath(candidates: CatalogRelation[], paths: SearchPaths | undefined): CatalogRelation[] {
  if (paths === undefined || candidates.length < 2) return candidates;
  const chosen = new Set<CatalogRelation>();
  for (const path of paths) {
    const order = path.includes('pg_catalog') ? path : ['pg_catalog', ...path];
    let hit: CatalogRelation | undefined;
    for (const schema of order) {
      hit = candidates.find((c) => c.schema === schema);
      if (hit) break;
    }
    if (hit === undefined) return candidates;
    chosen.add(hit);
  }
  return [...chosen];
}

/**
 * A search_path value as PostgreSQL splits it (`a, "B"` → a, B); undefined where the split is not certain (a quote
 * inside a name, a comma inside quotes) or the path names `$user`, whose schema depends on the role in effect.
 */
export function parseSearchPath(value: string): string[] | undefined {
  const out: string[] = [];
  for (const raw of value.split(',')) {
    const s = raw.trim();
    if (s === '') continue;
    if (s.startsWith('"')) {
      if (s.length < 2 || !s.endsWith('"') || s.slice(1, -1).includes('"')) return undefined;
      out.push(s.slice(1, -1));
    } else if (s.includes('"') || s.includes(' ')) return undefined;
    else out.push(s.toLowerCase());
  }
  return out.includes('$user') ? undefined : out;
}

/** The search_paths a session may be under, from the path its login gave and the statements it sent since. */
export class SearchPathTracker {
  private list: string[][] | undefined;
  private seen = new Set<string>();
  /** Changes whenever `paths` does. */
  version = 0;

  /** `initial`: the search_path the session's login gave PostgreSQL; undefined when it gave none. */
  constructor(initial: string | undefined) {
    const path = initial === undefined ? undefined : parseSearchPath(initial);
    if (path !== undefined) this.add(path);
  }

  get paths(): SearchPaths | undefined {
    return this.list;
  }

  /** A statement ran that the tracker did not see (masking was off for it): the path is no longer known. */
  forget(): void {
    if (this.list === undefined) return;
    this.list = undefined;
    this.version++;
  }

  /** Statements about to run, in order. RESET and DEFAULT return to the login's path, which stays in the list. */
  observe(analyses: readonly MaskAnalysis[]): void {
    for (const a of analyses) {
      if (this.list === undefined) return;
      // User code may call set_config('search_path', …, false), which outlives it.
      if (a.opaque || a.setsConfig || a.searchPath === 'unknown') this.forget();
      else if (Array.isArray(a.searchPath)) this.add(a.searchPath);
    }
  }

  private add(path: readonly string[]): void {
    const key = path.join('\u0000');
    if (this.seen.has(key)) return;
    // A client cannot grow a session's state without bound: past the cap, every candidate counts.
    if (this.seen.size >= MAX_PATHS) {
      this.forget();
      return;
    }
    this.seen.add(key);
    this.list = [...(this.list ?? []), [...path]];
    this.version++;
  }
}
