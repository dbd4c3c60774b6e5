/**
 * Code PostgreSQL runs without a call in the text: the function behind an operator
 * (https://www.postgresql.org/docs/current/sql-createoperator.html) and the cast function or domain CHECK behind a
 * cast (https://www.postgresql.org/docs/current/sql-createcast.html, https://www.postgresql.org/docs/current/sql-createdomain.html).
 * The raw tree has no types, so only names are recorded here; resolveWithCatalog finds what they may run.
 */
import type { AnalysisContext } from './analysis-context.js';
import type { Node } from './parser.js';

/** Node types that use an operator or a cast (walkFields hands them here before walking into them). */
export const IMPLICIT_CODE_NODES: ReadonlySet<string> = new Set([
  'A_Expr',
  'SubLink',
  'CaseExpr',
  'SortBy',
  'JoinExpr',
  'TypeCast',
]);

const EQUALS = ['='];

/** `BETWEEN` is parsed with its own name and compared with `>=` and `<=` (NOT BETWEEN: `<` and `>`). */
const BETWEEN: Readonly<Record<string, string[]>> = {
  AEXPR_BETWEEN: ['>=', '<='],
  AEXPR_BETWEEN_SYM: ['>=', '<='],
  AEXPR_NOT_BETWEEN: ['<', '>'],
  AEXPR_NOT_BETWEEN_SYM: ['<', '>'],
};

function names(list: unknown): string[] {
  return ((list as Node[] | undefined) ?? []).map((n) =>
    String((n.String as { sval?: string } | undefined)?.sval ?? ''),
  );
}

function addOperatorName(parts: string[], ctx: AnalysisContext): void {
  if (parts.length === 0) return;
  const name = parts[parts.length - 1];
  // OPERATOR(schema.op): that schema only (a database name before it must be the current one).
  if (parts.length > 1) ctx.facts.addOperator({ schema: parts[parts.length - 2], name });
  else ctx.facts.addOperator({ name });
}

/** Records the operator (or cast type) node `key` of type uses; its children are walked by the caller. */
export function recordImplicitCode(key: string, node: Node, ctx: AnalysisContext): void {
  switch (key) {
    case 'A_Expr': {
      const between = BETWEEN[String(node.kind)];
      if (between) for (const op of between) addOperatorName([op], ctx);
      else addOperatorName(names(node.name), ctx);
      return;
    }
    case 'SubLink': {
      // `x IN (SELECT …)` carries no operator name: it compares with `=`. EXISTS, ARRAY and scalar sublinks use none.
      const op = names(node.operName);
      if (op.length > 0) addOperatorName(op, ctx);
      else if (node.subLinkType === 'ANY_SUBLINK') addOperatorName(EQUALS, ctx);
      return;
    }
    case 'CaseExpr':
      // `CASE x WHEN v` compares x = v.
      if (node.arg !== undefined) addOperatorName(EQUALS, ctx);
      return;
    case 'SortBy':
      if (node.useOp !== undefined) addOperatorName(names(node.useOp), ctx);
      return;
    case 'JoinExpr':
      // USING and NATURAL compare the shared columns with `=`.
      if ((node.usingClause as unknown[] | undefined)?.length || node.isNatural === true) addOperatorName(EQUALS, ctx);
      return;
    case 'TypeCast': {
      const type = names((node.typeName as Node | undefined)?.names);
      const name = type[type.length - 1];
      if (name) ctx.facts.casts.add(name);
      return;
    }
  }
}
