import type { Decision, Subjects } from '@pgwarden/policy';
import type { Identity } from '../proxy/hooks.js';

/**
 * Approval grants: an approver who approves a held statement may also approve, for a while, later statements of
 * the same shape (approval.grants in the policy, `grant` in the decision message). An agent that repeats one
 * reviewed statement with different values then needs one approval, not one per row.
 *
 * What a grant covers is deliberately narrow. A later statement is covered only when all of these are equal to the
 * approved one's: the policy (name and hash: any reload that changes it ends every grant), the rule that held it,
 * who asks (namespace, service account, OIDC user), the SQL's fingerprint (its text with constants replaced), and
 * what the analysis found in it (each statement's kind, relations and functions). The later statement is analysed
 * and decided afresh; a grant only stands in for the person when that decision is again `review`, so a rule or
 * guardrail that denies it still denies it. Statements whose effect a constant decides are never covered: a DO
 * block's body, the setting a SET or set_config() names; two such statements share a fingerprint whatever they do.
 */

export interface Grant {
  /** The approval that gave it (the request's id). */
  id: string;
  /** The approver's name. */
  by: string;
  /** Epoch ms at which it ends. */
  until: number;
  key: string;
  /** Who may revoke it, and whose signature a revocation needs: the policy's, as when the grant was given. */
  approvers: Subjects;
  decisionKeys?: readonly string[];
  /** The policy it was given under: a suspension of that policy ends it. */
  policy?: { namespace?: string; name: string };
}

/** What a held statement offers a grant: the key later statements must match, and the longest grant allowed. */
export interface GrantScope {
  key: string;
  maxMs: number;
  fingerprint: string;
}

/**
 * The grant key of a statement held for review, or undefined when no grant may cover it (see above). `fingerprint`
 * is undefined for SQL that does not normalize.
 */
export function grantKey(
  policy: { namespace?: string; name: string; hash: string },
  d: Decision,
  identity: Identity,
  fingerprint: string | undefined,
  /** Every operation each statement performs (the analysis's `kinds`), in statement order. */
  kinds: readonly (readonly string[])[],
): string | undefined {
  if (fingerprint === undefined || d.statements.length === 0 || kinds.length !== d.statements.length) return undefined;
  // A constant decides what these do: a DO block's body, the setting a set_config() or SET names.
  if (kinds.some((k) => k.includes('do') || k.includes('set'))) return undefined;
  return JSON.stringify([
    policy.namespace ?? '',
    policy.name,
    policy.hash,
    d.rule ?? '',
    identity.namespace ?? '',
    identity.serviceAccount ?? '',
    identity.user ?? '',
    identity.issuer ?? '',
    fingerprint,
    d.statements.map((s, i) => [s.kind, kinds[i], s.rule ?? '', s.tables, s.functions]),
  ]);
}

/**
 * Whether every constant of a statement (its `$n` in the normalized text: literals and Bind parameters alike) is a
 * value compared with, or given to, a column: `col = $1`, `col LIKE $1`, `col IN ($1, $2)`, `SET col = $1`, the rows
 * of an INSERT's VALUES. Only then do two statements of one shape differ in which rows or data they touch, the risk
 * an approver takes with a grant. Anywhere else a constant can decide what the statement does as a whole:
 * `WHERE id = 1 OR 1 = 0` and `… OR 1 = 1` share a shape, as do `WHERE false` and `WHERE true`, `LIMIT 1` and
 * `LIMIT 1000000`, `now() > '2030-01-01'` and `> '2000-01-01'`. Such a statement gets no grant. Read off the text,
 * so it errs towards no: a constant it cannot place makes the statement ungrantable.
 */
export function constantsOnlyAsValues(normalized: string): boolean {
  // Comments are whitespace to PostgreSQL, but a line comment can put `a =` right before a constant in the text.
  const plain = withoutComments(normalized);
  if (plain === undefined) return false;
  let t = plain;
  // A WITH query's columns can be anything (`WITH c AS (SELECT now() AS t) … WHERE t > $1`).
  if (/\bWITH\b(?!\s+TIME\s+ZONE\b)/i.test(t)) return false;
  // One relation only: `DELETE FROM orders o USING orders p WHERE o.id = $1 OR p.id = $2` deletes every row or one,
  // and UPDATE … FROM and JOIN name second relations too.
  if (/(?<![\w$".])(?:USING|JOIN)\b/i.test(t) || /^\s*UPDATE\b[\s\S]*(?<![\w$".])FROM\b/i.test(t)) return false;
  // Nor may a FROM item be a function, a subquery or VALUES: `USING pg_backend_pid() p WHERE … OR p > $1`.
  if (!fromItemsAreRelations(t)) return false;
  // A constant inside a subquery decides it for every row at once (`OR EXISTS (SELECT … WHERE id > $1)`).
  for (const m of t.matchAll(/\(\s*(?:SELECT|VALUES|TABLE)\b/gi)) {
    const end = closingParen(t, m.index);
    if (end === undefined || /\$\d/.test(t.slice(m.index, end))) return false;
  }
  // The INSERT's own VALUES rows of bare constants (with casts): the data inserted.
  t = t.replace(INSERT_VALUES, (_whole, head: string) => `${head} `);
  // `col IN ($1, $2, …)`: the list is compared with the column.
  t = t.replace(IN_LIST, (whole, col: string, at: number, all: string) =>
    isColumn(col, all.slice(0, at)) ? `${col} IN ()` : whole,
  );
  for (const m of t.matchAll(/\$\d+/g)) {
    const before = t.slice(0, m.index);
    const c = COMPARED.exec(before);
    if (c === null || !isColumn(c[1], before.slice(0, c.index + c[0].indexOf(c[1])))) return false;
  }
  return true;
}

/** `sql` with each comment replaced by a space; undefined when one does not end or quoting is unclear. */
function withoutComments(sql: string): string | undefined {
  let out = '';
  let i = 0;
  while (i < sql.length) {
    const ch = sql[i];
    if (ch === '"' || ch === "'") {
      // Quoted identifiers (and any literal the normalization left): copied whole, doubled quotes included.
      let j = i + 1;
      for (;;) {
        const k = sql.indexOf(ch, j);
        if (k < 0) return undefined;
        if (sql[k + 1] === ch) j = k + 2;
        else {
          j = k + 1;
          break;
        }
      }
      out += sql.slice(i, j);
      i = j;
    } else if (ch === '-' && sql[i + 1] === '-') {
      const k = sql.indexOf('\n', i);
      out += ' ';
      i = k < 0 ? sql.length : k;
    } else if (ch === '/' && sql[i + 1] === '*') {
      let depth = 1;
      let j = i + 2;
      while (depth > 0) {
        if (j >= sql.length) return undefined;
        if (sql.startsWith('/*', j)) {
          depth++;
          j += 2;
        } else if (sql.startsWith('*/', j)) {
          depth--;
          j += 2;
        } else j++;
      }
      out += ' ';
      i = j;
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** The index of the `)` closing the `(` at `open` (quoted identifiers skipped), if any. */
function closingParen(t: string, open: number): number | undefined {
  let depth = 0;
  for (let i = open; i < t.length; i++) {
    const ch = t[i];
    if (ch === '"') {
      const k = t.indexOf('"', i + 1);
      if (k < 0) return undefined;
      i = k;
    } else if (ch === '(') depth++;
    else if (ch === ')' && --depth === 0) return i;
  }
  return undefined;
}

/** Words that end a FROM list (at its own parenthesis depth). */
const FROM_LIST_END =
  /^(?:WHERE|GROUP|HAVING|ORDER|LIMIT|OFFSET|FETCH|FOR|WINDOW|UNION|INTERSECT|EXCEPT|RETURNING|ON|SET|SELECT|VALUES)\b/i;

/**
 * Whether every item of every FROM, USING and JOIN list is a relation named by identifier (with ONLY, an alias and
 * column aliases). A function, a subquery, VALUES, LATERAL or a parenthesized join is not: its "columns" can hold one
 * value for every row, so comparing one with a constant is a switch, not a choice of rows.
 */
function fromItemsAreRelations(t: string): boolean {
  for (const m of t.matchAll(/(?<![\w$".])(?:FROM|USING|JOIN)\b/gi)) {
    let i = m.index + m[0].length;
    let itemStart = true;
    let depth = 0;
    while (i < t.length) {
      const rest = t.slice(i);
      const ws = /^\s+/.exec(rest);
      if (ws) {
        i += ws[0].length;
        continue;
      }
      if (depth === 0 && itemStart) {
        if (!new RegExp(String.raw`^(?:ONLY\s+)?${IDENT}(?![\w$".]|\s*\()`, 'i').test(rest)) return false;
        if (/^(?:LATERAL|ROWS)\b/i.test(rest)) return false;
        itemStart = false;
      }
      const ch = t[i];
      if (ch === '(') depth++;
      else if (ch === ')') {
        if (depth === 0) break;
        depth--;
      } else if (ch === ';' && depth === 0) break;
      // A second relation: a constant compared with its column can hold for every row or none (a self-join, a
      // catalog table, a one-row table), which the text cannot tell from a choice of rows.
      else if (ch === ',' && depth === 0) return false;
      else if (ch === '"') {
        const k = t.indexOf('"', i + 1);
        if (k < 0) return false;
        i = k;
      } else if (depth === 0 && /[A-Za-z_]/.test(ch) && !/[\w$".]/.test(t[i - 1] ?? ' ')) {
        const word = /^[A-Za-z_][\w$]*/.exec(rest)![0];
        if (FROM_LIST_END.test(word) || /^(?:JOIN|USING|FROM)$/i.test(word)) break;
        i += word.length;
        continue;
      }
      i++;
    }
  }
  return true;
}

const PLACEHOLDER = String.raw`-?\s*\$\d+(?:::[\w ."\[\]]+?)?`;
const IDENT = String.raw`(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+")(?:\.(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+"))*`;
const ROW = String.raw`\(\s*${PLACEHOLDER}\s*(?:,\s*${PLACEHOLDER}\s*)*\)`;
/** The first statement's own VALUES rows, `INSERT INTO t [AS a] [(cols)] [OVERRIDING … VALUE] VALUES (…), …`. */
const INSERT_VALUES = new RegExp(
  String.raw`^(\s*INSERT\s+INTO\s+${IDENT}(?:\s+AS\s+${IDENT})?\s*(?:\([^()]*\))?\s*(?:OVERRIDING\s+(?:SYSTEM|USER)\s+VALUE\s+)?VALUES)\s*${ROW}(?:\s*,\s*${ROW})*`,
  'i',
);
const IN_LIST = new RegExp(
  String.raw`(?<![\w$".:])(${IDENT})\s+IN\s*\(\s*${PLACEHOLDER}\s*(?:,\s*${PLACEHOLDER}\s*)*\)`,
  'gi',
);
/** The text before a constant ends with `<identifier> <comparison>`; the identifier not a cast's type (`::text =`). */
const COMPARED = new RegExp(
  String.raw`(?:^|[^\w$".:])(${IDENT})\s*(?:=|<>|!=|<=|>=|<|>|(?:NOT\s+)?I?LIKE)\s*-?\s*$`,
  'i',
);
/** Words that look like a column but are a value of the session or the clock, or a keyword. */
const NOT_COLUMNS = new Set([
  'current_user',
  'session_user',
  'system_user',
  'user',
  'current_role',
  'current_catalog',
  'current_schema',
  'current_date',
  'current_time',
  'current_timestamp',
  'localtime',
  'localtimestamp',
  'null',
  'true',
  'false',
  'not',
  'and',
  'or',
  'where',
  'when',
  'then',
  'else',
  'case',
  'select',
  'set',
  'on',
  'having',
  'limit',
  'offset',
  'returning',
  // `CASE … END > $1`, `ts AT LOCAL > $1`.
  'end',
  'local',
]);

/** The last words of a cast's type (`::double precision`, `::timestamp with time zone`, `::interval day`). */
const CAST_TYPE_BEFORE = new RegExp(
  String.raw`::\s*${IDENT}(?:\s+(?:with|without|time|zone|precision|varying|year|month|day|hour|minute|second|to))*\s*$`,
  'i',
);

/** Whether `ident`, which `before` precedes, names a column: not a keyword, nor the last word of a cast's type. */
function isColumn(ident: string, before: string): boolean {
  if (CAST_TYPE_BEFORE.test(before)) return false;
  const last = ident.split('.').at(-1)!;
  return last.startsWith('"') || !NOT_COLUMNS.has(last.toLowerCase());
}

/** A grant at most this many are kept per sidecar; the one ending first goes when another comes. */
const MAX_GRANTS = 1024;

/** The grants one sidecar holds (in memory: a restart ends them, and the agent asks again). */
export class ApprovalGrants {
  private readonly byKey = new Map<string, Grant>();
  private readonly byId = new Map<string, Grant>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly max = MAX_GRANTS,
  ) {}

  /** The live grant covering `key`, if any. */
  find(key: string): Grant | undefined {
    const g = this.byKey.get(key);
    if (g && g.until <= this.now()) {
      this.remove(g);
      return undefined;
    }
    return g;
  }

  add(g: Grant): void {
    const prev = this.byKey.get(g.key);
    if (prev) this.remove(prev);
    if (this.byKey.size >= this.max) {
      let first: Grant | undefined;
      for (const x of this.byKey.values()) if (!first || x.until < first.until) first = x;
      if (first) this.remove(first);
    }
    this.byKey.set(g.key, g);
    this.byId.set(g.id, g);
  }

  /** Ends grant `id`; returns it if it was live. */
  revoke(id: string): Grant | undefined {
    const g = this.byId.get(id);
    if (!g) return undefined;
    this.remove(g);
    return g.until > this.now() ? g : undefined;
  }

  /** Ends every grant given under `policy` (it was suspended); returns them. */
  endPolicy(policy: { namespace?: string; name: string }): Grant[] {
    const ended: Grant[] = [];
    for (const g of [...this.byId.values()]) {
      if (g.policy?.name !== policy.name || (g.policy.namespace ?? '') !== (policy.namespace ?? '')) continue;
      this.remove(g);
      ended.push(g);
    }
    return ended;
  }

  get(id: string): Grant | undefined {
    return this.byId.get(id);
  }

  /** The ids of live grants (to read back their revocations after a reconnect). */
  ids(): string[] {
    const now = this.now();
    const out: string[] = [];
    for (const g of [...this.byId.values()]) {
      if (g.until <= now) this.remove(g);
      else out.push(g.id);
    }
    return out;
  }

  get size(): number {
    return this.byKey.size;
  }

  private remove(g: Grant): void {
    if (this.byKey.get(g.key) === g) this.byKey.delete(g.key);
    this.byId.delete(g.id);
  }
}
