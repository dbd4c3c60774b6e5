/** Lineage values: which base columns (schema.table.column) a value is computed from, or "cannot tell". */

export interface Lineage {
  cols: Set<string>;
  /** True when some input could not be traced (user functions, unknown relations, dynamic SQL). */
  unknown: boolean;
}

export interface OutputColumn {
  name: string;
  lin: Lineage;
  /** A `*` over a relation whose columns are unknown: stands for any number of output columns. */
  expands?: boolean;
}

const SEP = '\u001f';

export function colKey(schema: string, table: string, column: string): string {
  return `${schema}${SEP}${table}${SEP}${column}`;
}

export function splitColKey(key: string): [schema: string, table: string, column: string] {
  const [s, t, c] = key.split(SEP);
  return [s, t, c];
}

export function emptyLineage(): Lineage {
  return { cols: new Set(), unknown: false };
}

export function unknownLineage(): Lineage {
  return { cols: new Set(), unknown: true };
}

/** Adds `src` into `into` (mutates and returns `into`). */
export function addLineage(into: Lineage, src: Lineage): Lineage {
  for (const c of src.cols) into.cols.add(c);
  if (src.unknown) into.unknown = true;
  return into;
}

export function unionLineage(list: readonly Lineage[]): Lineage {
  const out = emptyLineage();
  for (const l of list) addLineage(out, l);
  return out;
}

export function sameLineage(a: Lineage, b: Lineage): boolean {
  if (a.unknown !== b.unknown || a.cols.size !== b.cols.size) return false;
  for (const c of a.cols) if (!b.cols.has(c)) return false;
  return true;
}

/**
 * Maps a statement's output columns onto the RowDescription's fields. A `*` over an unknown relation stands for
 * any number of columns: the fields before it map by position from the start, the fields after it from the end,
 * the rest get the union of the expanding items. When the counts cannot line up, every field gets the union of
 * all outputs (over-masking, never under-masking).
 */
export function alignOutputs(outputs: readonly OutputColumn[], fieldCount: number): Lineage[] {
  const firstExp = outputs.findIndex((o) => o.expands);
  if (firstExp < 0 && outputs.length === fieldCount) return outputs.map((o) => o.lin);
  const all = unionLineage(outputs.map((o) => o.lin));
  if (firstExp < 0) return Array.from({ length: fieldCount }, () => all);
  let lastExp = outputs.length - 1;
  while (!outputs[lastExp].expands) lastExp--;
  const head = outputs.slice(0, firstExp);
  const tail = outputs.slice(lastExp + 1);
  if (head.length + tail.length > fieldCount) return Array.from({ length: fieldCount }, () => all);
  const middle = unionLineage(outputs.slice(firstExp, lastExp + 1).map((o) => o.lin));
  const out: Lineage[] = head.map((o) => o.lin);
  while (out.length < fieldCount - tail.length) out.push(middle);
  for (const t of tail) out.push(t.lin);
  return out;
}
