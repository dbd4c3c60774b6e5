/**
 * The statements of a simple Query as PostgreSQL splits them, without its parser: for a Query that failed, which of
 * its statements ran (one CommandComplete each, in order, up to the error: postgres.c exec_simple_query). PostgreSQL
 * parses the whole string before it runs any statement, so only SQL that parses matters here: a `;` ends a statement
 * unless it is inside a string, a quoted identifier, a dollar-quoted string, a comment or parentheses (a rule's action
 * list), as PostgreSQL's lexer reads them (scan.l) with standard_conforming_strings on (the proxy refuses sessions
 * without it: unsafe-settings.ts). A SQL-standard function body (`BEGIN ATOMIC … END`) has `;` inside it that the
 * grammar, not the lexer, tells apart (gram.y): the body opens only in CREATE [OR REPLACE] FUNCTION | PROCEDURE, as
 * the two tokens BEGIN ATOMIC, and holds `stmt ;` items, so the END that closes it comes right after a `;` or its
 * ATOMIC; any other END closes a CASE or is a column label (`SELECT 1 end`). The statements of a body are `stmt`,
 * not `toplevel_stmt`: BEGIN and END transaction statements cannot start one, so an END after a `;` in a body is
 * always the body's. A Query whose quotes, comments or parentheses are not closed is not split (undefined). Callers
 * check the statements against the CommandComplete tags as well (sql-names.ts, removedBy).
 * https://www.postgresql.org/docs/current/sql-syntax-lexical.html, sql-createfunction.html
 */

/** One statement: its text (from its first token to its `;`) and its first keyword, lower case ('' if none). */
export interface SqlStatement {
  text: string;
  first: string;
}

const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13);
/** ident_start: letters, `_` and every non-ASCII character (scan.l treats bytes \200-\377 as letters). */
const isIdentStart = (c: number) => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128;
/** ident_cont: ident_start, digits and `$`. */
const isIdentCont = (c: number) => isIdentStart(c) || (c >= 48 && c <= 57) || c === 36;
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;

/**
 * Where the comment starting at `at` ends, as scan.l reads it: `--` to the end of the line, a block comment nested.
 * `at` when no comment starts there; -1 for a block comment that is not closed.
 */
export function commentEnd(sql: string, at: number): number {
  const c = sql.charCodeAt(at);
  if (c === 45 && sql.charCodeAt(at + 1) === 45) {
    const nl = sql.indexOf('\n', at);
    return nl < 0 ? sql.length : nl + 1;
  }
  if (c !== 47 || sql.charCodeAt(at + 1) !== 42) return at;
  const n = sql.length;
  let level = 1;
  let i = at + 2;
  while (i < n && level > 0) {
    if (sql.charCodeAt(i) === 47 && sql.charCodeAt(i + 1) === 42) {
      level++;
      i += 2;
    } else if (sql.charCodeAt(i) === 42 && sql.charCodeAt(i + 1) === 47) {
      level--;
      i += 2;
    } else i++;
  }
  return level > 0 ? -1 : i;
}

export function splitStatements(sql: string): SqlStatement[] | undefined {
  const out: SqlStatement[] = [];
  const n = sql.length;
  let start = 0;
  let depth = 0;
  let first = '';
  let tokens = false;
  /** The token before this one: a word (lower case), ';' in a function body, or '' for anything else. */
  let prevWord = '';
  /** Function bodies open around this point, and the leading words of the innermost statement (routineHead). */
  let bodies = 0;
  const head: string[] = [];
  let headDone = false;
  const end = (at: number) => {
    if (tokens) out.push({ text: sql.slice(start, at).trim(), first });
    first = '';
    tokens = false;
    prevWord = '';
    head.length = 0;
    headDone = false;
  };
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    const after = commentEnd(sql, i);
    if (after !== i) {
      if (after < 0) return undefined;
      i = after;
      continue;
    }
    if (c === 59 && depth === 0) {
      if (bodies === 0) end(i);
      else {
        // A statement of the body ends; the next one (or the body's END) follows.
        prevWord = ';';
        head.length = 0;
        headDone = false;
      }
      i++;
      continue;
    }
    const leading = !tokens;
    // From its first token, as PostgreSQL's statement spans go (comments ahead of it are not its text).
    if (leading) start = i;
    tokens = true;
    let word = '';
    if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentCont(sql.charCodeAt(j))) j++;
      word = sql.slice(i, j).toLowerCase();
      if (leading) first = word;
      // E'…': backslash escapes, the quote among them.
      if (word === 'e' && sql.charCodeAt(j) === 39) {
        i = quoted(sql, j, 39, true);
        if (i < 0) return undefined;
        prevWord = '';
        headDone = true;
        continue;
      }
      i = j;
    } else if (c === 39 || c === 34) {
      // '…' and "…": a doubled quote stands for itself.
      i = quoted(sql, i, c, false);
      if (i < 0) return undefined;
    } else if (c === 36) {
      DOLLAR_TAG.lastIndex = i;
      const tag = DOLLAR_TAG.exec(sql);
      if (tag !== null) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        if (close < 0) return undefined;
        i = close + tag[0].length;
      } else {
        // $1, a parameter
        i++;
        while (i < n && sql.charCodeAt(i) >= 48 && sql.charCodeAt(i) <= 57) i++;
      }
    } else if (c >= 48 && c <= 57) {
      // A number (its exponent or fraction too): what follows it starts a new token, as in scan.l.
      i++;
      while (i < n && /[0-9.eE_]/.test(sql[i])) i++;
    } else {
      if (c === 40) depth++;
      else if (c === 41 && --depth < 0) return undefined;
      i++;
    }
    let tok = word;
    if (depth === 0 && word !== '') {
      // BEGIN ATOMIC: a function body whose `;` the grammar reads, not the lexer. Its first statement starts as one
      // after a `;` does, and so may its END.
      if (word === 'atomic' && prevWord === 'begin' && routineHead(head)) {
        bodies++;
        head.length = 0;
        headDone = false;
        tok = ';';
      } else if (word === 'end' && bodies > 0 && prevWord === ';') bodies--;
      else if (!headDone && head.length < 4) head.push(word);
    } else headDone = true;
    prevWord = tok;
  }
  if (depth !== 0 || bodies !== 0) return undefined;
  end(n);
  return out;
}

/** Whether a statement starting with these words is CREATE [OR REPLACE] FUNCTION | PROCEDURE (gram.y CreateFunctionStmt). */
function routineHead(words: readonly string[]): boolean {
  if (words[0] !== 'create') return false;
  const at = words[1] === 'or' && words[2] === 'replace' ? 3 : 1;
  return words[at] === 'function' || words[at] === 'procedure';
}

/** Index just past the quoted text starting at `at` (quote `q`), or -1 if it is not closed. */
function quoted(sql: string, at: number, q: number, backslash: boolean): number {
  const n = sql.length;
  let i = at + 1;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (backslash && c === 92) i += 2;
    else if (c === q) {
      if (sql.charCodeAt(i + 1) !== q) return i + 1;
      i += 2;
    } else i++;
  }
  return -1;
}
