import type { StatementAnalysis } from './analysis-types.js';

/** Limits so a hostile client cannot grow a session's state without bound. */
const MAX_PREPARED_NAMES = 4096;
const MAX_VARIANTS_PER_NAME = 8;
const MAX_SEARCH_PATH_SCHEMAS = 64;

/**
 * What the analyser must remember per client session: the schemas that may be on search_path and the SQL-level
 * prepared statements. Both only ever grow. The analyser cannot know whether a SET, PREPARE or DEALLOCATE really
 * took effect (it may be denied, fail, or be rolled back), so it assumes every variant it has seen may be in
 * effect: an unqualified name must be allowed in every schema that may be on the path, and EXECUTE p must be
 * allowed for every statement ever prepared as p. Stricter than PostgreSQL, never looser.
 */
export class SessionState {
  /** Schemas an unqualified name may resolve to, in first-seen order. */
  readonly searchPath: string[];
  /** The role `$user` in search_path stands for (the policy's role, else the login user). */
  readonly user: string | undefined;
  /**
   * True once any search_path named pg_catalog explicitly: then pg_catalog may be searched after other schemas,
   * so even catalog names resolve to every candidate.
   */
  catalogExplicit = false;
  private readonly prepared = new Map<string, StatementAnalysis[]>();
  private readonly preparedKeys = new Map<string, Set<string>>();
  private readonly poisoned = new Set<string>();
  private key: string;

  constructor(options: { searchPath?: readonly string[]; user?: string } = {}) {
    this.user = options.user;
    this.searchPath = [];
    this.key = '';
    this.addSearchPath(options.searchPath ?? ['public']);
  }

  /** Adds the schemas of a (new) search_path setting; `$user` expands to the session role. */
  addSearchPath(schemas: readonly string[]): void {
    for (const raw of schemas) {
      const s = raw === '$user' ? (this.user ?? '$user') : raw;
      if (s === 'pg_catalog') this.catalogExplicit = true;
      if (s === '' || this.searchPath.includes(s)) continue;
      if (this.searchPath.length >= MAX_SEARCH_PATH_SCHEMAS) {
        // Beyond the cap an unqualified name could be anywhere: the wildcard schema only `*` globs cover.
        if (!this.searchPath.includes('*')) this.searchPath.push('*');
        break;
      }
      this.searchPath.push(s);
    }
    this.key = `${this.catalogExplicit ? 'C' : ''}${this.user ?? ''}\u0000${this.searchPath.join('\u0000')}`;
  }

  /** Cache key component: analyses resolved under the same key are interchangeable. */
  get resolutionKey(): string {
    return this.key;
  }

  /** `key` identifies the prepared statement's content (variants with the same key are one). */
  addPrepared(name: string, analysis: StatementAnalysis, key: string): void {
    if (this.poisoned.has(name)) return;
    const list = this.prepared.get(name);
    if (list === undefined) {
      if (this.prepared.size >= MAX_PREPARED_NAMES) {
        this.poisoned.add(name);
        return;
      }
      this.prepared.set(name, [analysis]);
      this.preparedKeys.set(name, new Set([key]));
    } else if (!this.preparedKeys.get(name)?.has(key)) {
      this.preparedKeys.get(name)?.add(key);
      if (list.length >= MAX_VARIANTS_PER_NAME) {
        this.prepared.delete(name);
        this.poisoned.add(name);
      } else list.push(analysis);
    }
  }

  /** Every statement that may be prepared under `name`; undefined when unknown (or untrackable). */
  preparedVariants(name: string): readonly StatementAnalysis[] | undefined {
    return this.poisoned.has(name) ? undefined : this.prepared.get(name);
  }
}

export function createSessionState(options: { searchPath?: readonly string[]; user?: string } = {}): SessionState {
  return new SessionState(options);
}
