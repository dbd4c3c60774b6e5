import type { DangerousCategory, StatementKind } from '../api/access-policy-schema.js';

export type RelationAccess = 'read' | 'write' | 'lock';

export interface RelationRef {
  schema: string;
  name: string;
  access: RelationAccess;
  /** false when the name was unqualified and resolved against a search_path candidate. */
  qualified: boolean;
}

export interface FunctionRef {
  schema: string;
  name: string;
  qualified: boolean;
  /** How a call the text does not name is made (`run by operator ##`), for messages; absent for a call by name. */
  via?: string;
}

/**
 * `t.f` where the analysis cannot tell a column from a call: PostgreSQL reads it as `f(t)` when `t` has no column `f`
 * and a function `f` takes t's row type (https://www.postgresql.org/docs/current/xfunc-sql.html#XFUNC-SQL-COMPOSITE-FUNCTIONS).
 */
export interface FieldCall {
  /** The field name `f`. */
  name: string;
  /** The relation `t` names (its candidates, as an unqualified relation resolves), when it names a table or view. */
  relations?: Array<{ schema: string; name: string }>;
  /** How many of the relation's first columns an alias's column list renamed (`FROM t o(a)`): not f, whatever their names. */
  renamed?: number;
  /** What `f(t)` would call, resolved as an unqualified call of `f`. */
  functions: FunctionRef[];
}

/**
 * An operator the statement uses, written (`a !! b`, `OPERATOR(s.!!)`) or implied (`IN`, `BETWEEN`, `CASE x WHEN`,
 * `JOIN … USING`, `ORDER BY … USING`): PostgreSQL runs the function behind it (pg_operator.oprcode), which the raw
 * tree does not name. resolveWithCatalog turns the ones defined outside pg_catalog into calls.
 */
export interface OperatorRef {
  /** Set for `OPERATOR(schema.op)`. */
  schema?: string;
  name: string;
}

export interface DangerousUse {
  category: DangerousCategory;
  /** What triggered it, e.g. `pg_catalog.pg_read_file` or `COPY ... PROGRAM`. */
  detail: string;
}

export interface StatementAnalysis {
  /** The statement's own text (sliced from the Query by UTF-8 byte offsets), trimmed. */
  text: string;
  /** The top-level kind; EXECUTE reports the prepared statement's kind. */
  kind: StatementKind;
  /** Every kind of operation the statement performs (CTE writes, EXPLAIN ANALYZE, DO bodies, FOR UPDATE...). */
  kinds: StatementKind[];
  relations: RelationRef[];
  functions: FunctionRef[];
  /**
   * Field references that may be calls. Without the database's catalog they count as calls for rules with a
   * `functions` list; resolveWithCatalog turns each into a call or drops it.
   */
  fieldCalls?: FieldCall[];
  /** Operators used (see OperatorRef); absent when none. */
  operators?: OperatorRef[];
  /**
   * Type names of explicit casts (`x::t`, `CAST(x AS t)`, `t 'literal'`), the last part of the name: a cast to a
   * domain runs its CHECK, a cast made WITH FUNCTION runs that function. Absent when none.
   */
  casts?: string[];
  /** Writes data, takes row/advisory locks, or changes sequences. */
  writes: boolean;
  /** Runs TRUNCATE (also inside a DO block): rows removed that no row count or statistic counts. */
  truncates?: true;
  /** UPDATE/DELETE operations (anywhere in the statement) without a WHERE clause that references a column. */
  missingWhere: ('update' | 'delete')[];
  dangerous: DangerousUse[];
  /** Set when the statement would change the session's role or authorization: always denied. */
  identityChange?: string;
  /**
   * Set when the statement would change how PostgreSQL lexes later statements (standard_conforming_strings off, a
   * client-only client_encoding) or return search_path to a default the analysis does not know: always denied.
   */
  unsafeSetting?: string;
  /** Set for EXECUTE of a name the session never prepared (or could not track). */
  unknownPrepared?: string;
}

export type SqlAnalysis =
  | { ok: true; statements: StatementAnalysis[] }
  | {
      ok: false;
      /** code: 42601 when the parser rejects the SQL, 54001 when it is too deeply nested to analyse. */
      error: { message: string; position?: number; code: '42601' | '54001' };
      statements: [];
    };
