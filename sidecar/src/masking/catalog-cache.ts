import { buildCatalogSnapshot, type CatalogRow, type CatalogSnapshot, emptyCatalog } from '@pgwarden/policy';
import { catalogFailureCause, MaskingIoError } from './errors.js';

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
 * Operators whose function a client could have written: C and internal functions need a superuser to create
 * (https://www.postgresql.org/docs/current/sql-createfunction.html), so extension operators like citext's `=` do not
 * count. https://www.postgresql.org/docs/current/catalog-pg-operator.html
 */
export const OPERATORS_SQL = `SELECT DISTINCT o.oprname AS name FROM pg_operator o
JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_language l ON l.oid = p.prolang
WHERE o.oprnamespace NOT IN (${SYSTEM_NAMESPACES}) AND l.lanname NOT IN ('c', 'internal')`;

/**
 * Operand types of the operators named like a user operator (OPERATORS_SQL): the user operators' and pg_catalog's.
 * An operator use whose operand types are known then counts as user code only when a user operator of exactly those
 * types exists or pg_catalog has none (see typedOperatorRunsUserCode).
 */
export const OPERATOR_SIGNATURES_SQL = `WITH user_op AS (${OPERATORS_SQL})
SELECT o.oprname AS name, o.oprleft::int8::text AS l, o.oprright::int8::text AS r,
  (o.oprnamespace <> 'pg_catalog'::regnamespace)::text AS user
FROM pg_operator o JOIN user_op u ON u.name = o.oprname
LEFT JOIN pg_proc p ON p.oid = o.oprcode LEFT JOIN pg_language l ON l.oid = p.prolang
WHERE o.oprnamespace = 'pg_catalog'::regnamespace
  OR (o.oprnamespace NOT IN (${SYSTEM_NAMESPACES}) AND l.lanname NOT IN ('c', 'internal'))`;

/**
 * For the policy (CatalogSnapshot.operatorFunctions): every operator outside pg_catalog/information_schema with the
 * function it runs, in whatever language (a client can back an operator with a built-in such as
 * pg_terminate_backend, or with a C function an extension installed). Left out: an extension's own operators over
 * its own C or internal functions (citext's `=`), which only a superuser's script can create and which run nothing a
 * client wrote. An operator counts its commutator's and negator's functions too: the planner may run `b #@# a` for
 * `a ## b` and `a !## b` for `NOT (a ## b)` (https://www.postgresql.org/docs/current/xoper-optimization.html).
 * https://www.postgresql.org/docs/current/catalog-pg-operator.html
 */
export const OPERATOR_FUNCTIONS_SQL = `SELECT DISTINCT o.oprname AS name, n.nspname AS schema, pn.nspname AS fschema, p.proname AS fname
FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
JOIN pg_operator r ON r.oid IN (o.oid, o.oprcom, o.oprnegate)
JOIN pg_proc p ON p.oid = r.oprcode JOIN pg_namespace pn ON pn.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT (l.lanname IN ('c', 'internal') AND EXISTS (
    SELECT FROM pg_depend od JOIN pg_depend fd ON fd.refobjid = od.refobjid
      AND fd.refclassid = 'pg_extension'::regclass AND fd.deptype = 'e'
      AND fd.classid = 'pg_proc'::regclass AND fd.objid = p.oid
    WHERE od.classid = 'pg_operator'::regclass AND od.objid = r.oid
      AND od.refclassid = 'pg_extension'::regclass AND od.deptype = 'e'))`;

/**
 * For the policy (CatalogSnapshot.aggregateFunctions): each aggregate outside pg_catalog/information_schema with the
 * support functions a call of it runs, in whatever schema and language. https://www.postgresql.org/docs/current/catalog-pg-aggregate.html
 */
export const AGGREGATE_FUNCTIONS_SQL = `SELECT DISTINCT ap.proname AS name, an.nspname AS schema, pn.nspname AS fschema, p.proname AS fname
FROM pg_aggregate a JOIN pg_proc ap ON ap.oid = a.aggfnoid JOIN pg_namespace an ON an.oid = ap.pronamespace
JOIN pg_proc p ON p.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn,
  a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn)
JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE an.nspname NOT IN ('pg_catalog', 'information_schema')`;

/** Every operator name (pg_catalog's included): a name outside it means an operator newer than the snapshot. */
export const OPERATOR_NAMES_SQL = 'SELECT DISTINCT oprname AS name FROM pg_operator';

/**
 * For the policy (CatalogSnapshot.typeFunctions): the functions a cast to a type may run, by the type's name (arrays
 * under their own name too): a cast's function outside pg_catalog (https://www.postgresql.org/docs/current/catalog-pg-cast.html),
 * and for a domain every function its CHECK constraints and its base domains' call, directly or as an operator's
 * (pg_depend records both). https://www.postgresql.org/docs/current/sql-createdomain.html
 */
export const TYPE_FUNCTIONS_SQL = `WITH RECURSIVE dom(oid, base) AS (
  SELECT oid, oid FROM pg_type WHERE typtype = 'd'
  UNION SELECT d.oid, t.typbasetype FROM dom d JOIN pg_type t ON t.oid = d.base
  WHERE t.typtype = 'd' AND t.typbasetype <> 0
), fn(type, proc) AS (
  SELECT c.casttarget, c.castfunc FROM pg_cast c JOIN pg_proc p ON p.oid = c.castfunc
  WHERE p.pronamespace NOT IN (${SYSTEM_NAMESPACES})
  UNION
  SELECT dom.oid, CASE WHEN dep.refclassid = 'pg_proc'::regclass THEN dep.refobjid ELSE o.oprcode END
  FROM dom JOIN pg_constraint con ON con.contypid = dom.base
  JOIN pg_depend dep ON dep.classid = 'pg_constraint'::regclass AND dep.objid = con.oid
    AND dep.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
  LEFT JOIN pg_operator o ON dep.refclassid = 'pg_operator'::regclass AND o.oid = dep.refobjid
)
SELECT DISTINCT t.typname AS type, n.nspname AS schema, p.proname AS name
FROM fn JOIN pg_type t ON t.oid = fn.type OR (t.typelem = fn.type AND t.typcategory = 'A')
JOIN pg_proc p ON p.oid = fn.proc JOIN pg_namespace n ON n.oid = p.pronamespace`;

/**
 * For the policy (CatalogSnapshot.relationFunctions): the functions a write to a relation runs without a call in the
 * text: its triggers' (https://www.postgresql.org/docs/current/catalog-pg-trigger.html; foreign-key triggers are
 * internal and left out), and the user functions (outside pg_catalog, so `DEFAULT now()` or `CHECK (n > 0)` add
 * nothing) its CHECK constraints, defaults, generated columns and index expressions or predicates call, directly or
 * as an operator's (pg_depend), and its domain-typed columns' CHECKs (and their base domains') call.
 */
export const RELATION_FUNCTIONS_SQL = `WITH RECURSIVE dom(oid, base) AS (
  SELECT oid, oid FROM pg_type WHERE typtype = 'd'
  UNION SELECT d.oid, t.typbasetype FROM dom d JOIN pg_type t ON t.oid = d.base
  WHERE t.typtype = 'd' AND t.typbasetype <> 0
), uses(rel, obj, objclass, ref, refclass) AS (
  SELECT COALESCE(con.conrelid, ad.adrelid, ix.indrelid), d.objid, d.classid, d.refobjid, d.refclassid FROM pg_depend d
  LEFT JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
  LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
  LEFT JOIN pg_index ix ON d.classid = 'pg_class'::regclass AND ix.indexrelid = d.objid
  WHERE COALESCE(con.conrelid, ad.adrelid, ix.indrelid, 0) <> 0
    AND d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
  UNION ALL
  SELECT a.attrelid, con.oid, 'pg_constraint'::regclass, dep.refobjid, dep.refclassid
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  JOIN dom ON dom.oid = CASE WHEN t.typtype = 'd' THEN t.oid ELSE t.typelem END
  JOIN pg_constraint con ON con.contypid = dom.base
  JOIN pg_depend dep ON dep.classid = 'pg_constraint'::regclass AND dep.objid = con.oid
    AND dep.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
  WHERE a.attnum > 0 AND NOT a.attisdropped
), fn(rel, proc) AS (
  SELECT tgrelid, tgfoid FROM pg_trigger WHERE NOT tgisinternal
  UNION
  SELECT u.rel, p.oid FROM uses u
  LEFT JOIN pg_operator o ON u.refclass = 'pg_operator'::regclass AND o.oid = u.ref
  JOIN pg_proc p ON p.oid = CASE WHEN u.refclass = 'pg_proc'::regclass THEN u.ref ELSE o.oprcode END
  WHERE p.pronamespace NOT IN (${SYSTEM_NAMESPACES})
)
SELECT DISTINCT n.nspname || '.' || c.relname AS relation, pn.nspname AS schema, p.proname AS name
FROM fn JOIN pg_class c ON c.oid = fn.rel JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = fn.proc JOIN pg_namespace pn ON pn.oid = p.pronamespace`;

/**
 * Built-in base types other than arrays, each with the types it converts to implicitly: operator resolution's
 * candidates when no operator takes exactly the operand types (https://www.postgresql.org/docs/current/typeconv-oper.html).
 */
export const IMPLICIT_CASTS_SQL = `SELECT t.oid::int8::text AS oid, string_agg(c.casttarget::int8::text, ',') AS targets
FROM pg_type t LEFT JOIN pg_cast c ON c.castsource = t.oid AND c.castcontext = 'i'
WHERE t.oid < 16384 AND t.typtype = 'b' AND t.typcategory <> 'A' GROUP BY t.oid`;

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

/**
 * Relations whose DML runs user code: triggers (https://www.postgresql.org/docs/current/catalog-pg-trigger.html) and
 * rewrite rules; CHECK constraints, defaults, generated columns and index expressions or predicates that call a user
 * function, directly, as an operator's or as a cast's (pg_depend records the functions and operators an expression
 * uses), or that cast to a code type (a domain, whose CHECK runs: pg_depend records only the type); columns of domain
 * types, whose CHECK runs on every value written.
 */
export const TRIGGERS_SQL = `WITH code_type AS (${CODE_TYPES_SQL})
SELECT tgrelid::int8::text AS oid FROM pg_trigger WHERE NOT tgisinternal
UNION SELECT ev_class::int8::text FROM pg_rewrite WHERE rulename <> '_RETURN'
UNION SELECT COALESCE(con.conrelid, ad.adrelid, ix.indrelid)::int8::text FROM pg_depend d
  LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
  LEFT JOIN pg_proc p ON p.oid = CASE WHEN d.refclassid = 'pg_proc'::regclass THEN d.refobjid ELSE o.oprcode END
  LEFT JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
  LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
  LEFT JOIN pg_index ix ON d.classid = 'pg_class'::regclass AND ix.indexrelid = d.objid
  WHERE COALESCE(con.conrelid, ad.adrelid, ix.indrelid, 0) <> 0 AND (
    (d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass) AND p.pronamespace NOT IN (${SYSTEM_NAMESPACES}))
    OR (d.refclassid = 'pg_type'::regclass AND d.refobjid::int8::text IN (SELECT oid FROM code_type)))
UNION SELECT a.attrelid::int8::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type e ON e.oid = t.typelem
  WHERE a.attnum > 0 AND NOT a.attisdropped AND (t.typtype = 'd' OR e.typtype = 'd')
    AND t.typnamespace NOT IN (${SYSTEM_NAMESPACES})`;

/**
 * Relations whose row-level-security policies run user code on every row a statement reads or writes: a USING or
 * WITH CHECK expression calling a user function (directly, as an operator's or a cast's), casting to a code type, or
 * reading a relation that is itself such a relation (pg_depend of pg_policy). Policies count whether or not row
 * security is enabled on the table now: enabling it changes pg_class, not the policy.
 * https://www.postgresql.org/docs/current/catalog-pg-policy.html
 */
export const POLICY_CODE_SQL = `WITH RECURSIVE code_type AS (${CODE_TYPES_SQL}), code_rel(oid) AS (
  SELECT pol.polrelid FROM pg_policy pol JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
  LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
  LEFT JOIN pg_proc p ON p.oid = CASE WHEN d.refclassid = 'pg_proc'::regclass THEN d.refobjid ELSE o.oprcode END
  WHERE (d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass) AND p.pronamespace NOT IN (${SYSTEM_NAMESPACES}))
    OR (d.refclassid = 'pg_type'::regclass AND d.refobjid::int8::text IN (SELECT oid FROM code_type))
  UNION
  SELECT pol.polrelid FROM pg_policy pol JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
  JOIN code_rel r ON d.refclassid = 'pg_class'::regclass AND d.refobjid = r.oid
)
SELECT oid::int8::text AS oid FROM code_rel`;

/**
 * Enabled event triggers whose function a client could have written: they run on DDL of every role
 * (https://www.postgresql.org/docs/current/event-trigger-matrix.html), and their RAISE reaches the client.
 */
export const EVENT_TRIGGERS_SQL = `SELECT count(*)::text AS n FROM pg_event_trigger e
JOIN pg_proc p ON p.oid = e.evtfoid JOIN pg_language l ON l.oid = p.prolang
WHERE e.evtenabled <> 'D' AND l.lanname NOT IN ('c', 'internal')`;

/** Constraint names PostgreSQL quotes in error messages (kept by the error scrubber). */
export const CONSTRAINTS_SQL = `SELECT DISTINCT conname AS name FROM pg_constraint`;

/**
 * A fingerprint of the catalog rows user code lives in (functions, operators, casts, domains, triggers, rules,
 * policies, event triggers, CHECK constraints, defaults, index expressions, relations), to see another connection's DDL without
 * a reload: their count and the sum of their xmin. A row inserted or updated (CREATE, CREATE OR REPLACE, ALTER, RENAME)
 * carries its transaction's xmin, newer than any row it replaces, so the sum moves; a dropped row lowers the count.
 * Only objects created after initdb (OID >= 16384, FirstNormalObjectId) are summed: ~0.3 ms of database time on an
 * empty database, ~3 ms with 2000 tables of 20 columns, ~15-20 ms there with a user-written operator (PostgreSQL 15). https://www.postgresql.org/docs/current/ddl-system-columns.html
 */
export const FINGERPRINT_SQL = fingerprintSql(true);

/**
 * FINGERPRINT_SQL for a snapshot of the implied code alone (CatalogCacheOptions.whole): without the scan of every
 * column, which only operator resolution by operand types (a whole snapshot's) needs.
 */
const CODE_FINGERPRINT_SQL = fingerprintSql(false);

function fingerprintSql(allColumns: boolean): string {
  return `SELECT concat_ws(' ', ${[
    'pg_proc',
    'pg_operator',
    'pg_cast',
    "pg_type WHERE oid >= 16384 AND typtype = 'd'",
    'pg_trigger',
    'pg_rewrite',
    'pg_policy',
    'pg_event_trigger',
    "pg_constraint WHERE oid >= 16384 AND contype = 'c'",
    'pg_attrdef',
    'pg_index WHERE indexrelid >= 16384 AND (indexprs IS NOT NULL OR indpred IS NOT NULL)',
  ]
    .map(
      (from) =>
        `(SELECT count(*) || ':' || COALESCE(sum(xmin::text::int8), 0) FROM ${from.includes(' ') ? from : `${from} WHERE oid >= 16384`})`,
    )
    .join(', ')},
  ${
    // New, dropped, renamed or moved tables and views, columns added (a column of a domain type, a view calling user
    // code). Not by xmin: TRUNCATE, VACUUM FULL and CLUSTER rewrite pg_class rows too, and must not cause reloads.
    // Another session's temporary tables are no concern of this one's.
    `(SELECT count(*) || ':' || COALESCE(sum(oid::int8 + relnamespace::int8 + relnatts + hashtext(relname)), 0)
    FROM pg_class WHERE oid >= 16384 AND relkind IN ('r', 'p', 'v', 'm', 'f') AND relpersistence <> 't')`
  },
  ${
    // Columns of user-defined types, by their pg_depend rows (a column records its type there unless the type is
    // built in): ALTER COLUMN TYPE to, from or between domains (whose CHECK then runs on every write), with or without
    // a table rewrite, leaves pg_class alone. Not all of pg_attribute (below) unless needed: that reads every column
    // of every table once a second. TRUNCATE, VACUUM FULL and CLUSTER do not touch pg_depend. Temporary tables'
    // columns are left out, as above (by NOT IN: a join made the planner hash all of pg_class, four times slower).
    `(SELECT count(*) || ':' || COALESCE(sum(d.xmin::text::int8), 0)
    FROM pg_depend d WHERE d.refclassid = 'pg_type'::regclass AND d.refobjid >= 16384
      AND d.classid = 'pg_class'::regclass AND d.objsubid > 0
      AND d.objid NOT IN (SELECT oid FROM pg_class WHERE relpersistence = 't'))`
  },
  ${
    // Every column's row, by xmin, but only while user-written operators exist: then a change between built-in types
    // matters too (`text` to `varchar`, no rewrite, lets PostgreSQL pick a user `=` (varchar, varchar) that an exact
    // `text = text` kept out), as do renames and drops. The CASE runs the scan only then (~15 ms with 2000 tables of 20
    // columns). Index and TOAST columns are counted (CREATE INDEX elsewhere reloads); TRUNCATE, VACUUM FULL, CLUSTER
    // and REINDEX do not touch pg_attribute. Only operator resolution by operand types (a whole snapshot's) needs it.
    allColumns
      ? `CASE WHEN EXISTS (SELECT FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode
      JOIN pg_language l ON l.oid = p.prolang WHERE o.oid >= 16384 AND l.lanname NOT IN ('c', 'internal')) THEN (SELECT count(*) || ':' || COALESCE(sum(a.xmin::text::int8), 0)
    FROM pg_attribute a WHERE a.attrelid >= 16384 AND a.attnum > 0
      AND a.attrelid NOT IN (SELECT oid FROM pg_class WHERE relpersistence = 't')) END`
      : 'NULL'
  }) AS f`;
}

export interface CatalogCacheOptions {
  /** Reload at least this often even without DDL seen through this sidecar (other writers). Default 60 s. */
  maxAgeMs?: number;
  /**
   * Before a statement is checked against a snapshot older than this, compare the catalog's fingerprint
   * (FINGERPRINT_SQL) and reload if it moved: code another connection created is seen within this long. Default 1 s;
   * 0 turns it off (then only maxAgeMs).
   */
  verifyMs?: number;
  /**
   * A policy decision that a name unknown to the snapshot made (`t.f` taken for a column because no function f, or
   * no relation t, is known) waits for a fingerprint check unless one started less than this long ago. Default 100 ms.
   */
  unknownNameCheckMs?: number;
  /**
   * The longest one client statement waits for the catalog in all (--catalog-query-timeout): over every check it waits
   * for (its policy decision's and masking's, a check running ahead of it, a reload's ten queries). Past it the
   * statement is refused as by a timeout; the check goes on for the statements after it. Undefined: no bound beyond
   * the connection's per-query one.
   */
  statementTimeoutMs?: number;
  /** Told when a load or check fails (each time) and when one succeeds again after failures. */
  onEvent?: (e: CatalogEvent) => void;
  /**
   * Whether anything reads more of the snapshot now than the code operators, aggregates, casts and writes run (the
   * policy's dangerous categories under every policy): masking's column rules, a policy's function rules. When not,
   * a load reads only that code (five queries, no relation or column) and `loaded` stays false; once it is, the next
   * check reloads the whole. Default: always.
   */
  whole?: () => boolean;
}

/** What the cache reports for logs and metrics; `error` is the failure's own text (host:port at most, no secret). */
export type CatalogEvent =
  | { type: 'catalog.failed'; cause: 'timeout' | 'error'; error: string; first: boolean }
  | { type: 'catalog.recovered'; downMs: number };

/** After a failure, checks and loads are retried at most this often; statements that need one meanwhile are refused. */
const RETRY_MS = 2000;

/**
 * The catalog snapshot shared by every session of one upstream database. Loaded through its own connection,
 * reloaded on invalidate() (DDL seen, policy reload) and after maxAgeMs. A failed load keeps the previous snapshot
 * for what does not wait (row plans: an empty one at first, with which every base column is "unknown" and so
 * masked); a statement that waits for a load or check (ensure, checkForUnknownName) is refused when it fails.
 */
export class CatalogCache {
  private snap: CatalogSnapshot = emptyCatalog();
  private identifiers = new Set<string>();
  /** Fail closed until the first load says otherwise. */
  private events = true;
  private loadedAt = 0;
  private stale = true;
  private failedAt = 0;
  /** When the failures in a row began (0: the last load or check succeeded). */
  private downSince = 0;
  private policyVersion: string | undefined;
  private unknownAt = 0;
  /** The running load; resolves to its failure, if any (never rejects: nobody may have to be listening). */
  private inflight: Promise<Error | undefined> | undefined;
  private version = 0;
  /** The snapshot holds only the implied code (CatalogCacheOptions.whole). */
  private partial = false;
  /** FINGERPRINT_SQL (CODE_FINGERPRINT_SQL for a partial snapshot) as the snapshot's load saw it, and when the catalog last matched it. */
  private fingerprint: string | undefined;
  private verifiedAt = 0;
  /** When the last fingerprint query (a check's or a load's) was sent. */
  private checkStartedAt = 0;
  /** The running fingerprint check, resolving to its failure like `inflight`. */
  private verifying: Promise<Error | undefined> | undefined;
  lastError: Error | undefined;
  /** Per client statement (its request object), the time it has waited for the catalog so far. */
  private readonly spent = new WeakMap<object, number>();

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

  /** Event triggers a client could have written exist: DDL runs user code (true until a load says otherwise). */
  get eventTriggers(): boolean {
    return this.events;
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
    // While failures are being retried, the next statement that needs the catalog retries (and reloads).
    if (now - this.failedAt >= RETRY_MS) void this.refresh();
  }

  /** A policy reload (seen by any session) reloads the catalog once; the first version seen does not. */
  notePolicyVersion(version: string): void {
    if (this.policyVersion !== undefined && this.policyVersion !== version) this.invalidate();
    this.policyVersion = version;
  }

  /** Whether a whole snapshot is loaded (before that, snapshot()'s relations and functions are empty). */
  get loaded(): boolean {
    return this.version > 0 && !this.partial;
  }

  /** Whether a snapshot holding at least the implied code is loaded (operatorFunctions, typeFunctions...). */
  get codeLoaded(): boolean {
    return this.version > 0;
  }

  /**
   * Starts a reload when ensure() would wait for one, or a fingerprint check when one is due; never waits (the policy
   * check runs synchronously). So a policy decision sees another connection's function or relation within about
   * verifyMs plus a round trip, not maxAgeMs.
   */
  refreshIfOld(): void {
    if (this.inflight !== undefined || this.verifying !== undefined) return;
    const now = Date.now();
    if (now - this.failedAt < RETRY_MS) return;
    if (this.reloadDue(now)) void this.refresh();
    else if (this.verifyDue(now)) void this.verify();
  }

  /**
   * For a statement that a name the snapshot does not know decided (PolicySession): a promise of a current snapshot
   * when a reload is due, or when the last fingerprint check started at least unknownNameCheckMs ago (then one starts
   * now, reloading if the catalog moved); a check that started more recently is joined while it runs. Undefined when
   * nothing is due. Rate-limited so a loop of such statements costs the database at most one fingerprint query per
   * unknownNameCheckMs, shared by every session. The promise rejects (PGW_MASK_CATALOG_UNAVAILABLE) when the check
   * fails, and at once for RETRY_MS after a failure: the statement is then refused.
   */
  checkForUnknownName(statement?: object): Promise<CatalogSnapshot> | undefined {
    const now = Date.now();
    if (now - this.failedAt < RETRY_MS) return Promise.reject(this.unavailable(this.lastError));
    // A load running: refreshIfOld started it for this very statement, after DDL through the sidecar made the
    // snapshot stale (the name may be what that DDL created).
    if (this.reloadDue(now) || this.inflight !== undefined) return this.current(this.reloadAfter(), statement);
    // A check started moments ago: join it while it runs (it may not see what was created since), else none.
    if (now - this.checkStartedAt < (this.options.unknownNameCheckMs ?? 100))
      return this.verifying && this.current(this.verifying, statement);
    // Else a check that starts now, after one still running from before (unless that one failed: no retry yet).
    const running = this.verifying;
    return this.current(running ? running.then((failure) => failure ?? this.verify()) : this.verify(), statement);
  }

  /**
   * A new execution of `statement` begins (a prepared statement's Execute reuses its Parse's request): its time spent
   * waiting for the catalog starts again from 0.
   */
  newStatement(statement: object): void {
    this.spent.delete(statement);
  }

  /**
   * Whether ensure() would wait for (or be refused by) a check now: a decision that rests on the snapshot it had is
   * not to be reused without one (a prepared statement's, at its next Execute).
   */
  get checkDue(): boolean {
    const now = Date.now();
    return this.lastError !== undefined || this.reloadDue(now) || this.verifyDue(now);
  }

  /**
   * For a policy decision a user function created since the last check could change (an unqualified call of a
   * built-in name, which a user overload may stand behind: PolicySession): a promise of a current snapshot when a
   * reload is due or the last fingerprint check started verifyMs ago or more (joining one that runs), so no decision
   * rests on a snapshot older than that; undefined when none is due, and while failures are being retried (the
   * decision then keeps the last snapshot, as before).
   */
  checkIfDue(statement?: object): Promise<CatalogSnapshot> | undefined {
    const now = Date.now();
    if (now - this.failedAt < RETRY_MS) return undefined;
    if (this.reloadDue(now)) return this.current(this.reload(), statement);
    return this.verifyDue(now) ? this.current(this.verify(), statement) : undefined;
  }

  /**
   * For a policy decision operators, casts or triggers may change: a promise of a reloaded snapshot when DDL seen
   * through this sidecar (or a policy reload) made it stale or a reload is running (refreshIfOld starts one for the
   * very statement that asks), else undefined: no wait on the common path (age and other connections' DDL are left to
   * the background reload and check of refreshIfOld). Undefined too while failures are retried.
   */
  checkIfStale(statement?: object): Promise<CatalogSnapshot> | undefined {
    if ((!this.stale && this.inflight === undefined) || Date.now() - this.failedAt < RETRY_MS) return undefined;
    return this.current(this.reloadAfter(), statement);
  }

  /**
   * A load that sees every change marked so far: the one running, and one more after it when the snapshot was marked
   * stale since it began (a load that started before the DDL may not see it).
   */
  private reloadAfter(): Promise<Error | undefined> {
    const running = this.inflight;
    if (running === undefined) return this.reload();
    return running.then((failure) => failure ?? (this.stale ? this.reload() : undefined));
  }

  /** The last load or fingerprint check failed: the snapshot may be out of date by any amount. */
  get failing(): boolean {
    return this.lastError !== undefined;
  }

  private reloadDue(now: number): boolean {
    return (
      this.stale ||
      now - this.loadedAt > (this.options.maxAgeMs ?? 60_000) ||
      (this.partial && this.options.whole?.() !== false)
    );
  }

  private verifyDue(now: number): boolean {
    const every = this.options.verifyMs ?? 1000;
    return every > 0 && now - this.verifiedAt >= every;
  }

  /**
   * A fresh snapshot: waits for a reload when stale or too old, or for a fingerprint check when the last one is older
   * than verifyMs (and a reload if the catalog moved); else returns at once. Rejects (PGW_MASK_CATALOG_UNAVAILABLE)
   * when the reload or check it waited for failed, and at once while failures are being retried (RETRY_MS), so
   * statements do not each wait for a dead connection; a snapshot that needs no check is returned all the same.
   */
  async ensure(statement?: object): Promise<CatalogSnapshot> {
    const now = Date.now();
    const reload = this.reloadDue(now);
    if (!reload && !this.verifyDue(now)) return this.snap;
    if (now - this.failedAt < RETRY_MS) throw this.unavailable(this.lastError);
    return this.current(reload ? this.reload() : this.verify(), statement);
  }

  /**
   * The snapshot once `check` succeeded, or the error that refuses the statement waiting for it: its failure, or a
   * timeout once `statement` has waited statementTimeoutMs in all.
   */
  private async current(check: Promise<Error | undefined>, statement?: object): Promise<CatalogSnapshot> {
    const failure = await this.within(check, statement);
    if (failure !== undefined) throw this.unavailable(failure);
    return this.snap;
  }

  /**
   * `check`'s outcome, or a timeout when it has not ended by the time `statement` has waited for the catalog
   * statementTimeoutMs in all. The check goes on; until it ends the catalog counts as failing (as by a timeout: logs,
   * metrics, failing), so the statements after it are refused at once for RETRY_MS rather than each waiting again.
   */
  private within(check: Promise<Error | undefined>, statement: object | undefined): Promise<Error | undefined> {
    const limit = this.options.statementTimeoutMs;
    if (limit === undefined || statement === undefined) return check;
    const spent = this.spent.get(statement) ?? 0;
    const t0 = Date.now();
    return new Promise<Error | undefined>((resolve) => {
      const timer = setTimeout(() => {
        const error = new MaskingIoError(
          'PGW_MASK_CATALOG_TIMEOUT',
          `the catalog checks of a statement did not end within ${limit} ms (--catalog-query-timeout); they go on`,
        );
        // Counted once per outage like a failed check; while already failing, only the retry pacing restarts.
        if (this.lastError === undefined) this.failed(error);
        else this.failedAt = Date.now();
        resolve(error);
      }, limit - spent);
      void check.then((failure) => {
        clearTimeout(timer);
        resolve(failure);
      });
    }).finally(() => this.spent.set(statement, spent + Date.now() - t0));
  }

  private unavailable(failure: Error | undefined): MaskingIoError {
    const timeout = catalogFailureCause(failure) === 'timeout';
    return new MaskingIoError(
      'PGW_MASK_CATALOG_UNAVAILABLE',
      timeout
        ? 'the database catalog did not answer in time, so masking and the policy cannot check this statement'
        : 'the database catalog cannot be read, so masking and the policy cannot check this statement',
      { cause: failure },
    );
  }

  /** One fingerprint query shared by every statement waiting for it; a reload when the catalog moved. */
  private verify(): Promise<Error | undefined> {
    this.verifying ??= (async () => {
      const started = Date.now();
      this.checkStartedAt = started;
      try {
        const seen = (await this.query(this.partial ? CODE_FINGERPRINT_SQL : FINGERPRINT_SQL))[0]?.f ?? undefined;
        if (seen === this.fingerprint) {
          this.verifiedAt = started;
          this.succeeded();
          return undefined;
        }
        // A load already running may have read the catalog before the change: wait for it, then load again unless
        // it saw what this check saw.
        if (this.inflight) {
          const failure = await this.inflight;
          if (failure !== undefined) return failure;
        }
        if (seen === this.fingerprint) return undefined;
        this.invalidate();
        return await this.reload();
      } catch (err) {
        return this.failed(err);
      }
    })().finally(() => {
      this.verifying = undefined;
    });
    return this.verifying;
  }

  /** Reloads (joining a load already running); resolves to the snapshot, loaded or not. */
  refresh(): Promise<CatalogSnapshot> {
    return this.reload().then(() => this.snap);
  }

  private reload(): Promise<Error | undefined> {
    this.inflight ??= this.load().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private succeeded(): void {
    this.lastError = undefined;
    // It answers: nothing to hold back for (a check that was already running when another failed may succeed).
    this.failedAt = 0;
    if (this.downSince === 0) return;
    const downMs = Date.now() - this.downSince;
    this.downSince = 0;
    this.options.onEvent?.({ type: 'catalog.recovered', downMs });
  }

  private failed(err: unknown): Error {
    const error = err instanceof Error ? err : new Error(String(err));
    this.failedAt = Date.now();
    this.lastError = error;
    const first = this.downSince === 0;
    if (first) this.downSince = this.failedAt;
    const cause = error instanceof MaskingIoError && error.cause instanceof Error ? `: ${error.cause.message}` : '';
    this.options.onEvent?.({
      type: 'catalog.failed',
      cause: catalogFailureCause(error),
      error: `${error.message}${cause}`,
      first,
    });
    return error;
  }

  private async load(): Promise<Error | undefined> {
    this.stale = false;
    try {
      const whole = this.options.whole?.() !== false;
      // Taken first: a change while the rest loads moves the catalog past it, and the next check reloads.
      const started = Date.now();
      this.checkStartedAt = started;
      const fingerprint = (await this.query(whole ? FINGERPRINT_SQL : CODE_FINGERPRINT_SQL))[0]?.f ?? undefined;
      const none: Array<Record<string, string | null>> = [];
      const rows = whole ? await this.query(CATALOG_SQL) : none;
      const funcs = whole ? await this.query(FUNCTIONS_SQL) : none;
      const cons = whole ? await this.query(CONSTRAINTS_SQL) : none;
      const triggers = whole ? await this.query(TRIGGERS_SQL) : none;
      const operators = whole ? await this.query(OPERATOR_SIGNATURES_SQL) : none;
      const types = whole ? await this.query(CODE_TYPES_SQL) : none;
      const policies = whole ? await this.query(POLICY_CODE_SQL) : none;
      const events = whole ? await this.query(EVENT_TRIGGERS_SQL) : none;
      const implicit = whole ? await this.query(IMPLICIT_CASTS_SQL) : none;
      const opFunctions = await this.query(OPERATOR_FUNCTIONS_SQL);
      const opNames = await this.query(OPERATOR_NAMES_SQL);
      const aggregates = await this.query(AGGREGATE_FUNCTIONS_SQL);
      const typeFunctions = await this.query(TYPE_FUNCTIONS_SQL);
      const relationFunctions = await this.query(RELATION_FUNCTIONS_SQL);
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
          operators: operators.filter((o) => o.user === 'true').map((o) => o.name ?? ''),
          operatorSignatures: operators.map((o) => ({
            name: o.name ?? '',
            left: Number(o.l),
            right: Number(o.r),
            user: o.user === 'true',
          })),
          types: types.map((t) => ({ oid: Number(t.oid), name: t.name ?? '', source: t.source === 'true' })),
          readRelations: policies.map((p) => Number(p.oid)),
          implicitCasts: implicit.map((c) => ({
            source: Number(c.oid),
            targets: c.targets ? c.targets.split(',').map(Number) : [],
          })),
          operatorFunctions: opFunctions.map((o) => ({
            name: o.name ?? '',
            schema: o.schema ?? '',
            function: { schema: o.fschema ?? '', name: o.fname ?? '' },
          })),
          operatorNames: opNames.map((o) => o.name ?? ''),
          aggregateFunctions: aggregates.map((a) => ({
            name: a.name ?? '',
            schema: a.schema ?? '',
            function: { schema: a.fschema ?? '', name: a.fname ?? '' },
          })),
          typeFunctions: typeFunctions.map((t) => ({ type: t.type ?? '', schema: t.schema ?? '', name: t.name ?? '' })),
          relationFunctions: relationFunctions.map((r) => ({
            relation: r.relation ?? '',
            schema: r.schema ?? '',
            name: r.name ?? '',
          })),
        },
      );
      // A partial load leaves what masking knows of the last whole one, or its fail-closed start.
      if (whole) {
        const ids = new Set<string>();
        for (const r of catalogRows) {
          ids.add(r.name);
          if (r.attname) ids.add(r.attname);
          ids.add(`${r.schema}.${r.name}`);
        }
        for (const c of cons) if (c.name) ids.add(c.name);
        this.identifiers = ids;
        this.events = Number(events[0]?.n ?? 0) > 0;
      }
      this.partial = !whole;
      this.loadedAt = Date.now();
      this.fingerprint = fingerprint;
      this.verifiedAt = started;
      this.version++;
      this.succeeded();
      return undefined;
    } catch (err) {
      this.stale = true;
      return this.failed(err);
    }
  }
}
