import {
  alignOutputs,
  analyzeForMasking,
  type CatalogSnapshot,
  catalogFirst,
  checkMaskedUsage,
  compileMasking,
  emptyLineage,
  hidesUserOperators,
  initMaskingParser,
  type KeyResolver,
  type Lineage,
  lineageVerdict,
  type MaskAnalysis,
  type MaskingConfig,
  type MaskingDenial,
  type MaskingPlan,
  type MaskingRuleInput,
  type MaskingSettings,
  type MaskingSubject,
  type OutputColumn,
  planColumns,
  SearchPathTracker,
  scrubFreeText,
  type TextChannel,
  unionLineage,
} from '@pgwarden/policy';
import type { RowField, RowTransformer, StatementRecord, Verdict } from '../proxy/hooks.js';
import type { CatalogCache } from './catalog-cache.js';
import { createRowTransformer, type MaskingCounters } from './data-row-transformer.js';

/** The masking inputs of the policy in force; `version` (e.g. the rendered policy hash) changes on reload. */
export interface MaskingSource {
  version: string;
  rules: readonly MaskingRuleInput[];
  settings?: MaskingSettings;
}

export interface MaskerOptions {
  /** The MaskingRules selected for the session's policy (RenderedPolicy.maskingRules). */
  rules?: readonly MaskingRuleInput[];
  /** The policy's spec.masking switches. */
  settings?: MaskingSettings;
  /** Instead of rules/settings: read on every statement, so a policy reload applies to open sessions too. */
  source?: () => MaskingSource | undefined;
  /** Who the session is (unmaskedFor is matched against it). */
  subject: MaskingSubject;
  catalog: CatalogCache;
  /** Reads a hash key Secret (mounted files); without one a per-process random key is used. */
  resolveKey?: KeyResolver;
  /** The search_path the session's login gave PostgreSQL (startupSearchPath); undefined when it gave none. */
  searchPath?: string;
}

/** Per-session masking: statement checks, a row plan per RowDescription, free-text scrubbing. */
export interface Masker {
  /** The compiled rules in force for this session (recompiled when the source's version changes). */
  readonly config: MaskingConfig;
  /**
   * Call for every Query/Parse before deciding; `denied` means the statement must be denied (SQLSTATE 42501).
   * `statement` (the request) is what the catalog's per-statement deadline counts the wait of. Rejects with
   * PGW_MASK_CATALOG_UNAVAILABLE when the statement's masking needs the catalog and it cannot be checked.
   */
  check(sql: string, statement?: object): Promise<MaskingCheck>;
  /**
   * Whether a decision check() made may be reused now (a prepared statement's, at its next Execute): it needed no
   * catalog, or it was made on the snapshot in force now and that snapshot needs no check.
   */
  reusable(check: MaskingCheck): boolean;
  /** A new execution of a prepared statement begins: its catalog wait is counted from 0 again (CatalogCache). */
  newStatement(statement: object): void;
  /** Ties a verdict to the SQL it was given for, so planRows finds the lineage (else verdict.context.sql / statements). */
  bind(verdict: Verdict, sql: string): void;
  planRows(fields: RowField[], verdict: Verdict): RowTransformer | undefined;
  /**
   * `verdict`: the statement whose response carries the text, when known; `fields`: all fields of the error or
   * notice the text is one field of.
   */
  scrubText(text: string, channel?: TextChannel, verdict?: Verdict, fields?: ReadonlyMap<string, string>): string;
  /** A statement/portal name the client sent in a protocol message: kept by echo redaction like its SQL. */
  rememberName(name: string): void;
  /** A statement goes upstream unchecked (no masking rule applied to it): what it did to search_path is not known. */
  unchecked(): void;
  statementDone(record: StatementRecord): void;
  /** Masked columns and cells of a verdict's results since the last call (audit `masking`), or undefined. */
  takeStats(verdict: Verdict): { columns: string[]; cells: number } | undefined;
  /** Totals: masked output columns planned, masked cells reported (via takeStats). */
  readonly counters: MaskingCounters & { columns: number };
}

/** What Masker.check found. */
export interface MaskingCheck {
  denied?: MaskingDenial;
  /** The snapshot generation the decision rested on; undefined when it needed no catalog. */
  catalog?: number;
}

const NO_CATALOG: MaskingCheck = {};

/**
 * Statements whose masking needs no catalog: they read no relation, compute no value and run no user code
 * (transaction control, session settings, forgetting prepared statements and cursors, LISTEN). So a session can still
 * COMMIT, ROLLBACK or SET while the catalog cannot be read. COMMIT may fire deferred triggers, but the statement that
 * queued them was checked against a current catalog (and marked the session as running user code then).
 */
const CATALOG_FREE = new Set([
  'TransactionStmt',
  'VariableSetStmt',
  'VariableShowStmt',
  'DeallocateStmt',
  'DiscardStmt',
  'ClosePortalStmt',
  'ListenStmt',
  'UnlistenStmt',
]);

/** Statement kinds that cannot change the catalog; anything else invalidates the catalog snapshot when done. */
const CATALOG_NEUTRAL = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'ExplainStmt',
  'FetchStmt',
  'DeclareCursorStmt',
  'ClosePortalStmt',
  'VariableSetStmt',
  'VariableShowStmt',
  'CopyStmt',
  'PrepareStmt',
  'ExecuteStmt',
  'DeallocateStmt',
  'ListenStmt',
  'NotifyStmt',
  'UnlistenStmt',
  'LockStmt',
  'DiscardStmt',
  'CheckPointStmt',
]);

/**
 * Statements event triggers may fire on: anything that may change the catalog but transaction control and VACUUM /
 * ANALYZE (https://www.postgresql.org/docs/current/event-trigger-matrix.html), and SELECT INTO.
 */
function firesEventTriggers(a: MaskAnalysis): boolean {
  if (a.kind === 'SelectStmt') return !a.returnsRows;
  if (a.kind === 'TransactionStmt' || a.kind === 'VacuumStmt') return false;
  return a.kind === 'ExplainStmt' || !CATALOG_NEUTRAL.has(a.kind);
}

/**
 * The names an error or notice vouches for by its own fields, which a value computed at run time cannot be: the
 * schema, table, column, data type and constraint fields (the server fills them from catalog objects:
 * https://www.postgresql.org/docs/current/protocol-error-fields.html), the table's columns (the key list of
 * `Key (email)=(…)`), and the identifier at the error's position P in the statement (`column "nosuch" does not exist`):
 * P is set only for errors found while parsing and analysing the text, before any value was read. A value matching
 * one of them is one guess per statement, as any error is.
 */
function errorIdentifiers(
  fields: ReadonlyMap<string, string> | undefined,
  sql: string | undefined,
  snap: CatalogSnapshot,
): (name: string) => boolean {
  if (fields === undefined) return () => false;
  const names = new Set<string>();
  for (const k of ['s', 't', 'c', 'd', 'n']) {
    const v = fields.get(k);
    if (v) names.add(v);
  }
  const schema = fields.get('s');
  const table = fields.get('t');
  if (schema && table)
    for (const rel of snap.byName.get(table) ?? [])
      if (rel.schema === schema) for (const col of rel.columns) names.add(col.name);
  const pos = Number(fields.get('P'));
  if (sql !== undefined && Number.isInteger(pos) && pos > 0) {
    const parts = identifiersAt(sql, pos - 1);
    for (const p of parts) names.add(p);
    if (parts.length > 1) names.add(parts.join('.'));
  }
  names.delete('');
  return (name) => names.has(name);
}

const BARE_IDENTIFIER = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/;

/** The (dotted) identifier starting at `i`, as PostgreSQL names it: unquoted parts downcased (ASCII only), quoted kept. */
function identifiersAt(sql: string, i: number): string[] {
  const parts: string[] = [];
  let j = i;
  for (;;) {
    if (sql[j] === '"') {
      let out = '';
      let k = j + 1;
      for (; k < sql.length; k++) {
        if (sql[k] !== '"') out += sql[k];
        else if (sql[k + 1] === '"') {
          out += '"';
          k++;
        } else break;
      }
      if (k >= sql.length) break;
      parts.push(out);
      j = k + 1;
    } else {
      const m = BARE_IDENTIFIER.exec(sql.slice(j, j + 256));
      if (!m) break;
      parts.push(m[0].replace(/[A-Z]/g, (c) => c.toLowerCase()));
      j += m[0].length;
    }
    if (sql[j] !== '.') break;
    j++;
  }
  return parts;
}

const RECENT_SQL = 16;
/** Protocol-level statement/portal names kept for echo redaction (a client cycles through a few names). */
const RECENT_NAMES = 32;
/** What replaces message text once user-defined code has run in a session that has masked columns. */
const WITHHELD =
  '[pgwarden: message withheld: user-defined code ran in this session and may have raised masked values]';
const CACHE_SIZE = 256;

/**
 * The search_path a session's login gives PostgreSQL: the hooks' own startup parameter in place of the client's (as
 * the proxy sends them upstream), else the client's; a startup parameter outranks a role's or database's default.
 * undefined when neither gives one (the path then comes from settings the sidecar does not read).
 */
export function startupSearchPath(
  client: Record<string, string>,
  own: Record<string, string> | undefined,
): string | undefined {
  const find = (params: Record<string, string> | undefined) =>
    Object.entries(params ?? {}).find(([k]) => k.toLowerCase() === 'search_path')?.[1];
  return find(own) ?? find(client);
}

export function createMasker(opts: MaskerOptions): Masker {
  const catalog = opts.catalog;
  let version: string | undefined;
  let config: MaskingConfig = compileMasking(opts.rules ?? [], opts.settings, opts.subject, opts.resolveKey);
  /** Recompiles after a policy reload; with no policy at all everything stays masked by the last rules. */
  const current = (): MaskingConfig => {
    const src = opts.source?.();
    if (src && src.version !== version) {
      version = src.version;
      config = compileMasking(src.rules, src.settings, opts.subject, opts.resolveKey);
      cache.clear();
      catalog.notePolicyVersion(src.version);
    }
    return config;
  };
  const cursors = new Map<string, OutputColumn[]>();
  const prepared = new Map<string, OutputColumn[]>();
  const named = { cursor: (n: string) => cursors.get(n), prepared: (n: string) => prepared.get(n) };
  const recentSql: string[] = [];
  /** Protocol-level names the client used lately (most recent last), apart from the SQL so they never push it out. */
  const recentNames = new Set<string>();
  const bound = new WeakMap<Verdict, string>();
  const rowCalls = new WeakMap<Verdict, number>();
  const stats = new WeakMap<Verdict, Array<{ columns: string[]; counters: MaskingCounters; reported: number }>>();
  const cache = new Map<string, { gen: number; catalogFirst: boolean; analyses: MaskAnalysis[] }>();
  const counters = { cells: 0, columns: 0 };
  const paths = new SearchPathTracker(opts.searchPath);
  /** Analyses under the search_paths the session may be under, for output lineage (see lineageFor). */
  const pathCache = new Map<string, { gen: number; version: number; analyses: MaskAnalysis[] }>();
  let ddlInTransaction = false;
  let opaqueSeen = false;
  /** The session defined code (see MaskAnalysis.definesCode). */
  let codeDefined = false;

  const analyze = (sql: string): MaskAnalysis[] | undefined => {
    const gen = catalog.generation;
    const hit = cache.get(sql);
    const first = catalogFirst(paths.paths);
    if (hit && hit.gen === gen && hit.catalogFirst === first) return hit.analyses;
    let analyses: MaskAnalysis[];
    try {
      analyses = analyzeForMasking(sql, catalog.snapshot(), named, { catalogFirst: first });
    } catch {
      return undefined; // unparseable: the decision engine denies it; planRows treats lineage as unknown
    }
    // FETCH / EXECUTE depend on session state, not only on the text.
    if (!analyses.some((a) => a.kind === 'FetchStmt' || a.kind === 'ExecuteStmt')) {
      if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      cache.set(sql, { gen, catalogFirst: first, analyses });
    }
    return analyses;
  };

  const checkedUsage = new WeakMap<
    MaskAnalysis[],
    { config: MaskingConfig; snap: CatalogSnapshot; denied: MaskingDenial | undefined }
  >();
  /** Plans of RowDescriptions without expression columns: they depend only on the fields, config and snapshot. */
  const plans = new Map<string, MaskingPlan>();
  let plansFor: { config: MaskingConfig; snap: CatalogSnapshot } | undefined;
  const cachedPlan = (fields: RowField[], config: MaskingConfig, snap: CatalogSnapshot): MaskingPlan => {
    if (plansFor?.config !== config || plansFor.snap !== snap) {
      plans.clear();
      plansFor = { config, snap };
    }
    let key = '';
    for (const f of fields) key += `${f.tableOid}.${f.columnAttr}.${f.typeOid}.${f.format}.${f.name}\u0000`;
    let plan = plans.get(key);
    if (plan === undefined) {
      plan = planColumns(fields, undefined, config, snap);
      if (plans.size >= CACHE_SIZE) plans.delete(plans.keys().next().value as string);
      plans.set(key, plan);
    }
    return plan;
  };

  const readsCache = new WeakMap<MaskAnalysis[], { config: MaskingConfig; snap: CatalogSnapshot; reads: boolean }>();
  /**
   * Does the statement behind a verdict read a masked value anywhere (its outputs, predicates, writes or COPY), or
   * data it cannot trace? An error it raises may then quote a value computed from one.
   */
  const readsMasked = (verdict: Verdict, config: MaskingConfig): boolean => {
    const sql = sqlOf(verdict);
    const analyses = sql === undefined ? undefined : analyze(sql);
    if (analyses === undefined) return false; // nothing ran: unparseable SQL is denied before it reaches PostgreSQL
    const snap = catalog.snapshot();
    const hit = readsCache.get(analyses);
    if (hit && hit.config === config && hit.snap === snap) return hit.reads;
    const lin = emptyLineage();
    let untraceable = false;
    for (const a of analyses) {
      untraceable ||= a.untraceable === true || a.opaque === true;
      for (const part of [a.predicate, a.written, a.copyOut?.lin, ...a.outputs.map((o) => o.lin)]) {
        if (part) for (const c of part.cols) lin.cols.add(c);
      }
    }
    // Unknown lineage alone is not enough: a misspelt column resolves to nothing, and its error should name it.
    const reads = untraceable || lineageVerdict(lin, config, snap).rule !== undefined;
    readsCache.set(analyses, { config, snap, reads });
    return reads;
  };

  const remember = (sql: string): void => {
    if (recentSql[recentSql.length - 1] === sql) return;
    recentSql.push(sql);
    if (recentSql.length > RECENT_SQL) recentSql.shift();
  };

  const sqlOf = (verdict: Verdict): string | undefined => {
    const b = bound.get(verdict);
    if (b !== undefined) return b;
    const ctx = verdict.context as { sql?: unknown } | undefined;
    if (typeof ctx?.sql === 'string') return ctx.sql;
    const texts = verdict.statements?.map((s) => s.text).filter((t) => t.length > 0);
    return texts?.length ? texts.join(';\n') : undefined;
  };

  /**
   * The analyses of `sql` with unqualified names resolved through the search_paths the session may be under, when the
   * sidecar knows them and some name has candidates in several schemas; else `analyze`'s, which take every candidate.
   * Checks (predicates, writes, COPY) and the outputs of DECLARE and PREPARE keep every candidate: PostgreSQL analyses
   * a prepared statement again under the search_path its EXECUTE runs with. Rows are planned after every statement
   * sent before them was checked, so the paths known then include the one PostgreSQL ran them under.
   */
  const analyzeOnPath = (sql: string): MaskAnalysis[] | undefined => {
    const all = analyze(sql);
    const known = paths.paths;
    if (all === undefined || known === undefined || !all.some((a) => a.ambiguousNames)) return all;
    const gen = catalog.generation;
    const hit = pathCache.get(sql);
    if (hit && hit.gen === gen && hit.version === paths.version) return hit.analyses;
    let analyses: MaskAnalysis[];
    try {
      analyses = analyzeForMasking(sql, catalog.snapshot(), named, { paths: known, catalogFirst: catalogFirst(known) });
    } catch {
      return all;
    }
    if (pathCache.size >= CACHE_SIZE) pathCache.delete(pathCache.keys().next().value as string);
    pathCache.set(sql, { gen, version: paths.version, analyses });
    return analyses;
  };

  /** Per-field lineage of the statement a RowDescription belongs to, or undefined (= undecidable). */
  const lineageFor = (fields: RowField[], verdict: Verdict): Lineage[] | undefined => {
    const sql = sqlOf(verdict);
    const analyses = sql === undefined ? undefined : analyzeOnPath(sql);
    const rowStmts = analyses?.filter((a) => a.returnsRows) ?? [];
    if (rowStmts.length === 0) return undefined;
    // Several row-returning statements in one Query answer in order, one RowDescription each.
    const call = rowCalls.get(verdict) ?? 0;
    rowCalls.set(verdict, call + 1);
    const chosen = rowStmts.length === 1 ? rowStmts[0] : rowStmts[call];
    if (chosen && (chosen.outputs.some((o) => o.expands) || chosen.outputs.length === fields.length)) {
      return alignOutputs(chosen.outputs, fields.length);
    }
    const all = unionLineage(rowStmts.flatMap((a) => a.outputs.map((o) => o.lin)));
    return fields.map(() => all);
  };

  return {
    get config() {
      return current();
    },
    counters,
    async check(sql, statement) {
      const config = current();
      if (!config.active) return NO_CATALOG;
      remember(sql);
      await initMaskingParser();
      const wasCatalogFirst = catalogFirst(paths.paths);
      const before = catalog.generation;
      let analyses = analyze(sql);
      // Unparseable SQL is the decision engine's to deny (and leaves the session's search_path unknown). Content
      // detectors alone need no catalog (planRows scans every text column whatever the snapshot says), nor do
      // statements that read nothing (CATALOG_FREE). Column rules need a current one: which columns a table OID has,
      // views, triggers and user code decide the plan.
      if (!analyses) {
        paths.forget();
        return NO_CATALOG;
      }
      let gen: number | undefined;
      if (config.columns.length > 0 && !analyses.every((a) => CATALOG_FREE.has(a.kind))) {
        await catalog.ensure(statement);
        gen = catalog.generation;
        // Again only on a new snapshot (FETCH and EXECUTE are not cached: no second parse for them otherwise).
        if (gen !== before) analyses = analyze(sql);
        if (!analyses) {
          paths.forget();
          return NO_CATALOG;
        }
      }
      paths.observe(analyses);
      for (const a of analyses) {
        if (a.names?.kind === 'cursor') cursors.set(a.names.name, a.names.outputs);
        if (a.names?.kind === 'prepared') prepared.set(a.names.name, a.names.outputs);
      }
      const snap = catalog.snapshot();
      // A statement re-run (pgbench, an app's prepared queries) gets the same analyses: check them once per
      // config and catalog snapshot.
      let checked = checkedUsage.get(analyses);
      if (checked === undefined || checked.config !== config || checked.snap !== snap) {
        checked = { config, snap, denied: checkMaskedUsage(analyses, config, snap) };
        checkedUsage.set(analyses, checked);
      }
      const denied = checked.denied;
      // User-defined code may RAISE anything: from now on this session's notices and errors are withheld. Code the
      // session defined is unknown to the snapshot until its transaction commits and the snapshot reloads (and a
      // pipelined statement is checked before the definition ran), so any later statement may run it unseen.
      if (!denied && config.columns.length > 0 && (codeDefined || analyses.some((a) => a.opaque))) opaqueSeen = true;
      // Event triggers run on DDL of any role; which commands each fires for is not worth modelling: any statement
      // that may change the catalog counts (SELECT INTO and EXPLAIN, which may run CREATE TABLE AS, too).
      if (!denied && config.columns.length > 0 && catalog.eventTriggers && analyses.some(firesEventTriggers))
        opaqueSeen = true;
      if (!denied && analyses.some((a) => a.definesCode)) codeDefined = true;
      // Code the snapshot does not show (the session's own, an event trigger's) may call set_config() too.
      if (codeDefined || (catalog.eventTriggers && analyses.some(firesEventTriggers))) paths.forget();
      // pg_catalog no longer surely first on the path: a user operator it hid may now be chosen, also by statements
      // checked before (PostgreSQL analyses a prepared statement again under the new path, and this Query's own were
      // analysed under the old one). A SET needs no catalog check, so the snapshot may not be loaded yet: then
      // assume it hides one.
      if (
        wasCatalogFirst &&
        !catalogFirst(paths.paths) &&
        config.columns.length > 0 &&
        (!catalog.loaded || hidesUserOperators(snap))
      )
        opaqueSeen = true;
      return gen === undefined && denied === undefined ? NO_CATALOG : { denied, catalog: gen };
    },
    newStatement(statement) {
      catalog.newStatement(statement);
    },
    reusable(check) {
      return check.catalog === undefined || (check.catalog === catalog.generation && !catalog.checkDue);
    },
    bind(verdict, sql) {
      bound.set(verdict, sql);
    },
    planRows(fields, verdict) {
      const config = current();
      if (!config.active) return undefined;
      const needsLineage = config.columns.length > 0 && fields.some((f) => f.tableOid === 0);
      const snap = catalog.snapshot();
      const plan = needsLineage
        ? planColumns(fields, lineageFor(fields, verdict), config, snap)
        : cachedPlan(fields, config, snap);
      if (config.columns.length > 0 && fields.some((f) => f.tableOid !== 0 && !snap.byOid.has(f.tableOid))) {
        // A relation created since the snapshot: masked as undecidable now; reload so the next statement knows it.
        catalog.refreshSoon();
      }
      if (!plan.any) return undefined;
      counters.columns += plan.masked.length;
      const own: MaskingCounters = { cells: 0 };
      const list = stats.get(verdict) ?? [];
      list.push({ columns: plan.masked, counters: own, reported: 0 });
      stats.set(verdict, list);
      return createRowTransformer(plan, fields, config.detectors, own);
    },
    unchecked() {
      paths.forget();
    },
    rememberName(name) {
      // NAMEDATALEN bounds real names; '' (unnamed) would match any fragment.
      if (name === '' || name.length > 63) return;
      recentNames.delete(name);
      recentNames.add(name);
      if (recentNames.size > RECENT_NAMES) recentNames.delete(recentNames.values().next().value as string);
    },
    scrubText(text, channel, verdict, fields) {
      const config = current();
      if (!config.active) return text;
      // In what a statement reading masked values raised, a quoted fragment may be computed from one of them: the
      // client's SQL, its protocol names and catalog identifiers are all the client's to choose, so a dictionary
      // planted in any of them (`/* q000q … q999q */`, a table of 1000 such columns) would keep the fragment
      // `("q" || substr(ssn, 1, 3) || "q")::int` made. Trust none of them there, only the names the error itself
      // carries (errorIdentifiers).
      const untrusted = verdict !== undefined && config.columns.length > 0 && readsMasked(verdict, config);
      const echo =
        config.columns.length === 0
          ? undefined
          : untrusted
            ? { recentSql: [], isIdentifier: errorIdentifiers(fields, sqlOf(verdict), catalog.snapshot()) }
            : {
                recentSql: recentNames.size > 0 ? [...recentSql, ...recentNames] : recentSql,
                isIdentifier: (n: string) => catalog.isIdentifier(n),
              };
      const out = scrubFreeText(text, config.detectors, echo, channel);
      if (opaqueSeen && out.length > 0 && (channel ?? (text.endsWith('\n') ? 'copy' : 'error')) !== 'copy')
        return WITHHELD;
      return out;
    },
    takeStats(verdict) {
      const list = stats.get(verdict);
      if (!list) return undefined;
      const columns = new Set<string>();
      let cells = 0;
      for (const e of list) {
        for (const c of e.columns) columns.add(c);
        const delta = e.counters.cells - e.reported;
        e.reported = e.counters.cells;
        cells += delta;
        counters.cells += delta;
      }
      return columns.size ? { columns: [...columns], cells } : undefined;
    },
    statementDone(record) {
      // Without rules in force the catalog is not consulted (a policy reload invalidates it when rules return), and
      // check() never loaded the parser: analysing here would only fail, on every statement.
      if (!current().active) return;
      const analyses = analyze(record.request.sql);
      if (!analyses) return;
      for (const a of analyses) {
        if (a.kind === 'TransactionStmt') {
          // DDL inside a transaction block becomes visible to the catalog connection only at COMMIT.
          if (ddlInTransaction) catalog.invalidate();
          ddlInTransaction = false;
        } else if (!CATALOG_NEUTRAL.has(a.kind)) {
          catalog.invalidate();
          ddlInTransaction = true;
        }
      }
    },
  };
}
