import { buildCatalogSnapshot, type CatalogRow, type CatalogSnapshot, emptyCatalog } from '@pgwarden/policy';

/** Runs one read-only catalog query and returns its rows as text values keyed by column name (NULL = null). */
export type CatalogQuery = (sql: string) => Promise<Array<Record<string, string | null>>>;

/**
 * Every relation (so OIDs of system catalogs resolve too) with its columns for user schemas, and view definitions.
 * pg_attribute: https://www.postgresql.org/docs/current/catalog-pg-attribute.html — attnum > 0 are user columns,
 * attisdropped columns keep their attnum but are gone.
 */
export const CATALOG_SQL = `SELECT c.oid::int8::text AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
  a.attnum::text AS attnum, a.attname AS attname, a.atttypid::int8::text AS atttypid,
  CASE WHEN c.relkind IN ('v','m') AND n.nspname NOT IN ('pg_catalog','information_schema') THEN pg_get_viewdef(c.oid) END AS viewdef,
  par.parents
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN (SELECT inhrelid, string_agg(inhparent::int8::text, ',') AS parents FROM pg_inherits GROUP BY inhrelid) par
  ON par.inhrelid = c.oid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r','p','v','m','f') AND n.nspname NOT IN ('pg_catalog','information_schema','pg_toast')
WHERE n.nspname <> 'pg_toast'`;

export const FUNCTIONS_SQL = `SELECT DISTINCT n.nspname AS schema, p.proname AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog','information_schema')`;

const SYSTEM_NAMESPACES = `SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog','information_schema')`;

/**
 * Relations whose DML runs user code: triggers (https://www.postgresql.org/docs/current/catalog-pg-trigger.html) and
 * rewrite rules; CHECK constraints, defaults and generated columns that call a user function, directly or as an
 * operator's (pg_depend records the functions and operators an expression uses); columns of domain types, whose CHECK
 * runs on every value written.
 */
export const TRIGGERS_SQL = `SELECT tgrelid::int8::text AS oid FROM pg_trigger WHERE NOT tgisinternal
UNION SELECT ev_class::int8::text FROM pg_rewrite WHERE rulename <> '_RETURN'
UNION SELECT COALESCE(con.conrelid, ad.adrelid)::int8::text FROM pg_depend d
  LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
  JOIN pg_proc p ON p.oid = CASE WHEN d.refclassid = 'pg_proc'::regclass THEN d.refobjid ELSE o.oprcode END
  LEFT JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
  LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
  WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass) AND p.pronamespace NOT IN (${SYSTEM_NAMESPACES})
    AND COALESCE(con.conrelid, ad.adrelid, 0) <> 0
UNION SELECT a.attrelid::int8::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type e ON e.oid = t.typelem
  WHERE a.attnum > 0 AND NOT a.attisdropped AND (t.typtype = 'd' OR e.typtype = 'd')
    AND t.typnamespace NOT IN (${SYSTEM_NAMESPACES})`;

/**
 * Operators whose function a client could have written: C and internal functions need a superuser to create
 * (https://www.postgresql.org/docs/current/sql-createfunction.html), so extension operators like citext's `=` do not
 * count. https://www.postgresql.org/docs/current/catalog-pg-operator.html
 */
export const OPERATORS_SQL = `SELECT DISTINCT o.oprname AS name FROM pg_operator o
JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_language l ON l.oid = p.prolang
WHERE o.oprnamespace NOT IN (${SYSTEM_NAMESPACES}) AND l.lanname NOT IN ('c', 'internal')`;

/**
 * Types a cast to or from may run user code: domains (a cast to one runs its CHECK), and the user-defined ends of a
 * cast made WITH a user function a client could have written (both ends when neither is user-defined: a superuser's;
 * pg_catalog's own SQL-language casts, such as circle to polygon, do not count),
 * with their array types (an array cast runs the element cast). https://www.postgresql.org/docs/current/catalog-pg-cast.html
 */
export const CODE_TYPES_SQL = `WITH code_cast AS (
  SELECT c.castsource, c.casttarget, s.typnamespace NOT IN (${SYSTEM_NAMESPACES}) AS user_source,
    t.typnamespace NOT IN (${SYSTEM_NAMESPACES}) AS user_target
  FROM pg_cast c JOIN pg_proc p ON p.oid = c.castfunc JOIN pg_language l ON l.oid = p.prolang
  JOIN pg_type s ON s.oid = c.castsource JOIN pg_type t ON t.oid = c.casttarget
  WHERE l.lanname NOT IN ('c', 'internal') AND p.pronamespace NOT IN (${SYSTEM_NAMESPACES})
), ends AS (
  SELECT oid, false AS source FROM pg_type WHERE typtype = 'd' AND typnamespace NOT IN (${SYSTEM_NAMESPACES})
  UNION ALL SELECT casttarget, false FROM code_cast WHERE user_target OR NOT user_source
  UNION ALL SELECT castsource, true FROM code_cast WHERE user_source OR NOT user_target
)
SELECT t.oid::int8::text AS oid, t.typname AS name, bool_or(e.source)::text AS source
FROM ends e JOIN pg_type t ON t.oid = e.oid OR (t.typelem = e.oid AND t.typcategory = 'A')
GROUP BY t.oid, t.typname`;

/** Constraint names PostgreSQL quotes in error messages (kept by the error scrubber). */
export const CONSTRAINTS_SQL = `SELECT DISTINCT conname AS name FROM pg_constraint`;

export interface CatalogCacheOptions {
  /** Reload at least this often even without DDL seen through this sidecar (other writers). Default 60 s. */
  maxAgeMs?: number;
}

/**
 * The catalog snapshot shared by every session of one upstream database. Loaded through its own connection,
 * reloaded on invalidate() (DDL seen, policy reload) and after maxAgeMs. A failed load keeps the previous snapshot
 * (an empty one at first, with which every base column is "unknown" and so masked: failing closed).
 */
export class CatalogCache {
  private snap: CatalogSnapshot = emptyCatalog();
  private identifiers = new Set<string>();
  private loadedAt = 0;
  private stale = true;
  private failedAt = 0;
  private policyVersion: string | undefined;
  private unknownAt = 0;
  private inflight: Promise<CatalogSnapshot> | undefined;
  private version = 0;
  lastError: Error | undefined;

  constructor(
    private readonly query: CatalogQuery,
    private readonly options: CatalogCacheOptions = {},
  ) {}

  /** The current snapshot (never waits). */
  snapshot(): CatalogSnapshot {
    return this.snap;
  }

  /** Changes whenever a new snapshot is installed (analysis caches key on it). */
  get generation(): number {
    return this.version;
  }

  isIdentifier(name: string): boolean {
    return this.identifiers.has(name);
  }

  invalidate(): void {
    this.stale = true;
  }

  /**
   * Reloads in the background because a result named an unknown relation, at most once a second (a client's own
   * uncommitted tables stay unknown until commit and must not cause a reload per statement).
   */
  refreshSoon(): void {
    const now = Date.now();
    if (now - this.unknownAt < 1000) return;
    this.unknownAt = now;
    this.invalidate();
    void this.refresh();
  }

  /** A policy reload (seen by any session) reloads the catalog once; the first version seen does not. */
  notePolicyVersion(version: string): void {
    if (this.policyVersion !== undefined && this.policyVersion !== version) this.invalidate();
    this.policyVersion = version;
  }

  /** Whether a snapshot was ever loaded (before that, snapshot() is empty). */
  get loaded(): boolean {
    return this.version > 0;
  }

  /** Starts a reload when ensure() would wait for one; never waits (the policy check runs synchronously). */
  refreshIfOld(): void {
    if (this.inflight !== undefined) return;
    const now = Date.now();
    if (!this.stale && now - this.loadedAt <= (this.options.maxAgeMs ?? 60_000)) return;
    if (now - this.failedAt < 2000) return;
    void this.refresh();
  }

  /** A fresh snapshot: waits for a reload when stale or too old, else returns at once. */
  async ensure(): Promise<CatalogSnapshot> {
    const now = Date.now();
    const old = now - this.loadedAt > (this.options.maxAgeMs ?? 60_000);
    if (!this.stale && !old) return this.snap;
    // After a failure, retry at most every 2 s so statements do not each wait for a dead connection.
    if (now - this.failedAt < 2000) return this.snap;
    return this.refresh();
  }

  refresh(): Promise<CatalogSnapshot> {
    this.inflight ??= this.load().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async load(): Promise<CatalogSnapshot> {
    this.stale = false;
    try {
      const rows = await this.query(CATALOG_SQL);
      const funcs = await this.query(FUNCTIONS_SQL);
      const cons = await this.query(CONSTRAINTS_SQL);
      const triggers = await this.query(TRIGGERS_SQL);
      const operators = await this.query(OPERATORS_SQL);
      const types = await this.query(CODE_TYPES_SQL);
      const catalogRows: CatalogRow[] = rows.map((r) => ({
        oid: Number(r.oid),
        schema: r.schema ?? '',
        name: r.name ?? '',
        kind: r.kind ?? '',
        attnum: r.attnum === null ? null : Number(r.attnum),
        attname: r.attname,
        atttypid: r.atttypid === null ? null : Number(r.atttypid),
        viewdef: r.viewdef,
        parents: r.parents ? r.parents.split(',').map(Number) : undefined,
      }));
      this.snap = buildCatalogSnapshot(
        catalogRows,
        funcs.map((f) => ({ schema: f.schema ?? '', name: f.name ?? '' })),
        triggers.map((t) => Number(t.oid)),
        {
          operators: operators.map((o) => o.name ?? ''),
          types: types.map((t) => ({ oid: Number(t.oid), name: t.name ?? '', source: t.source === 'true' })),
        },
      );
      const ids = new Set<string>();
      for (const r of catalogRows) {
        ids.add(r.name);
        if (r.attname) ids.add(r.attname);
        ids.add(`${r.schema}.${r.name}`);
      }
      for (const c of cons) if (c.name) ids.add(c.name);
      this.identifiers = ids;
      this.loadedAt = Date.now();
      this.version++;
      this.lastError = undefined;
    } catch (err) {
      this.stale = true;
      this.failedAt = Date.now();
      this.lastError = err as Error;
    }
    return this.snap;
  }
}
