import type { AnalysisContext } from './analysis-context.js';
import { BUILTIN_FUNCTIONS } from './builtin-functions.js';
import { analyzeEmbeddedSql } from './embedded-sql.js';
import { dangerousFunction, sideEffect, stringArgument } from './function-catalog.js';
import type { Node } from './parser.js';
import { selectsRecordField } from './record-fields.js';
import { unsafeSettingValue } from './session-settings.js';
import { addUnqualifiedRelation, operation, type Scope, walk } from './statement-walker.js';

/** A string constant argument (`'x'` or `'x'::type`), or undefined when the value is computed. */
export function literalString(node: unknown): string | undefined {
  let n = node as Node | undefined;
  if (n?.TypeCast) n = (n.TypeCast as Node).arg as Node;
  const c = n?.A_Const as { sval?: { sval?: string } } | undefined;
  return c?.sval ? (c.sval.sval ?? '') : undefined;
}

/** Splits a regclass-style literal (`public.orders`, `"My"."T"`) the way PostgreSQL's identifier rules do. */
export function splitQualifiedName(text: string): string[] | undefined {
  const parts: string[] = [];
  const re = /\s*(?:"((?:[^"]|"")*)"|([^".\s]+))\s*(\.|$)/y;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) return undefined;
    parts.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2].toLowerCase());
    pos = re.lastIndex;
    if (m[3] === '') break;
  }
  return parts.length > 0 && parts.length <= 3 ? parts : undefined;
}

function addNamedRelation(
  text: string | undefined,
  access: 'read' | 'write',
  ctx: AnalysisContext,
  what: string,
): void {
  const parts = text === undefined ? undefined : splitQualifiedName(text);
  if (parts === undefined) {
    // A computed relation name could be anything: only a `*` glob covers it.
    ctx.facts.addRelation('*', '*', access, false);
    ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `${what}: relation name is not a literal` });
    return;
  }
  if (parts.length === 1) addUnqualifiedRelation(parts[0], access, ctx);
  else ctx.facts.addRelation(parts[parts.length - 2], parts[parts.length - 1], access, true);
}

/** `funcname` lists of String nodes → ['schema', 'name'] or ['name']. */
export function nameParts(list: unknown): string[] {
  return ((list as Node[]) ?? []).map((n) => String((n.String as { sval?: string })?.sval ?? ''));
}

/** Records a function reference (schema-qualified) and whether it is dangerous; no call semantics. */
export function addFunctionName(parts: string[], ctx: AnalysisContext): void {
  const name = parts[parts.length - 1] ?? '';
  if (parts.length >= 2) ctx.facts.addFunction(parts[parts.length - 2], name, true);
  else if (BUILTIN_FUNCTIONS.has(name) && !ctx.state.catalogExplicit) ctx.facts.addFunction('pg_catalog', name, false);
  else {
    if (BUILTIN_FUNCTIONS.has(name)) ctx.facts.addFunction('pg_catalog', name, false);
    for (const s of ctx.state.searchPath) ctx.facts.addFunction(s, name, false);
  }
  const danger = dangerousFunction(name);
  if (danger) ctx.facts.addDangerous({ category: danger, detail: `${parts.join('.')}()` });
}

export function callFunction(call: Node, scope: Scope, ctx: AnalysisContext): void {
  recordCall(call, ctx);
  for (const k in call) if (k !== 'funcname') walk(call[k], scope, ctx);
}

/**
 * `(expr).name` calls `name(expr)` when expr's type has no field `name`, whatever that type is:
 * `('SELECT … FROM hr.salaries'::text).ts_stat` runs ts_stat, `(42::bigint).pg_advisory_lock` takes the lock
 * (https://www.postgresql.org/docs/current/xfunc-sql.html#XFUNC-SQL-COMPOSITE-FUNCTIONS; PostgreSQL's
 * transformIndirection hands each field name to ParseFuncOrColumn). The raw tree has no types, so each field name
 * counts as a call of that name on what precedes it, unless what precedes it is known to be a record with that field
 * (record-fields.ts).
 */
export function callInFieldNotation(indirection: Node, scope: Scope, ctx: AnalysisContext): void {
  const steps = (indirection.indirection as Node[]) ?? [];
  steps.forEach((step, i) => {
    const field = (step.String as { sval?: string } | undefined)?.sval;
    if (field === undefined) return;
    if (i === 0 && selectsRecordField(indirection.arg, field, ctx)) return;
    const arg = i === 0 ? indirection.arg : { A_Indirection: { arg: indirection.arg, indirection: steps.slice(0, i) } };
    // Not callFunction: walking the synthesized argument would visit each prefix of the chain again.
    recordCall({ funcname: [{ String: { sval: field } }], args: [arg] }, ctx);
  });
  walk(indirection.arg, scope, ctx);
  walk(steps, scope, ctx);
}

/** What a call does, by its name and literal arguments; the calls inside its arguments are the caller's to walk. */
function recordCall(call: Node, ctx: AnalysisContext): void {
  const parts = nameParts(call.funcname);
  const name = parts[parts.length - 1] ?? '';
  const args = (call.args as unknown[]) ?? [];
  addFunctionName(parts, ctx);
  const qualified = parts.join('.');
  if (name === 'set_config') setConfig(args, ctx);
  const effect = sideEffect(name);
  if (effect?.type === 'sequence') {
    operation(ctx, 'update', true);
    addNamedRelation(literalString(args[effect.arg]), 'write', ctx, `${qualified}()`);
  } else if (effect?.type === 'relation') {
    operation(ctx, effect.kind, true);
    addNamedRelation(literalString(args[effect.arg]), 'write', ctx, `${qualified}()`);
  } else if (effect?.type === 'kind') operation(ctx, effect.kind, effect.writes);
  else if (effect?.type === 'large-object') {
    operation(ctx, effect.writes ? 'update' : 'select', effect.writes);
    ctx.facts.addRelation('pg_catalog', 'pg_largeobject', effect.writes ? 'write' : 'read', true);
  }

  const strArg = stringArgument(name);
  if (strArg?.type === 'sql' && (strArg.arity === undefined || strArg.arity === args.length)) {
    for (const i of strArg.args) {
      if (i >= args.length) continue;
      const sql = literalString(args[i]);
      if (sql === undefined)
        ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `${qualified}(): SQL argument is not a literal` });
      else analyzeEmbeddedSql(sql, ctx, 'exec', `${qualified}()`);
    }
  } else if (strArg?.type === 'cursor')
    ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `${qualified}(): reads a cursor by name` });
  else if (strArg?.type === 'relation')
    addNamedRelation(literalString(args[strArg.arg]), 'read', ctx, `${qualified}()`);
  else if (strArg?.type === 'schema') {
    const schema = literalString(args[strArg.arg]);
    ctx.facts.addRelation(schema ?? '*', '*', 'read', true);
  } else if (strArg?.type === 'database') ctx.facts.addRelation('*', '*', 'read', true);
}

/**
 * set_config(name, value, is_local) is SET in function form. Setting names are case-insensitive in PostgreSQL.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-SET
 */
function setConfig(args: unknown[], ctx: AnalysisContext): void {
  operation(ctx, 'set', false);
  const setting = literalString(args[0])?.trim().toLowerCase();
  if (setting === undefined) {
    ctx.facts.identity('set_config() with a computed setting name (could be role)');
    return;
  }
  if (setting === 'role' || setting === 'session_authorization') {
    ctx.facts.identity(`set_config('${setting}', ...)`);
    return;
  }
  const unsafe = unsafeSettingValue(setting, literalString(args[1]), 'set_config');
  if (unsafe) ctx.facts.unsafe(unsafe);
  if (setting === 'search_path') {
    const value = literalString(args[1]);
    const schemas = value === undefined ? ['*'] : parseSearchPathValue(value);
    recordSearchPath(schemas, ctx);
  }
}

/** `a, "B", $user` → ['a', 'B', '$user'] (the GUC's own list syntax). */
export function parseSearchPathValue(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) =>
      s.startsWith('"') && s.endsWith('"') && s.length >= 2 ? s.slice(1, -1).replace(/""/g, '"') : s.toLowerCase(),
    );
}

export function recordSearchPath(schemas: string[], ctx: AnalysisContext): void {
  ctx.state.addSearchPath(schemas);
  ctx.run.effects.push({ type: 'search-path', schemas });
}
