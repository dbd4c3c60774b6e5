/**
 * Masking plans: for each column of a RowDescription, what to do with its values. Base-table columns are resolved
 * by identity (table OID + attribute number → catalog), never by the name the query gave them; expression columns
 * (table OID 0) by lineage from the parse tree.
 */
import { type CatalogSnapshot, isSystemRelation, LEAKY_SYSTEM_RELATIONS } from './catalog-snapshot.js';
import { emptyLineage, type Lineage, splitColKey } from './lineage.js';
import { LineageWalker } from './lineage-walker.js';
import { type CompiledColumnRule, columnRuleFor, type MaskingConfig } from './masking-config.js';
import type { MaskAnalysis } from './statement-analysis.js';
import type { CompiledStrategy } from './strategies.js';

/** The RowDescription field facts a plan needs (structurally the proxy's RowField). */
export interface PlanField {
  name: string;
  tableOid: number;
  columnAttr: number;
  typeOid: number;
  /** 0 text, 1 binary. */
  format: number;
}

export type ColumnAction =
  | { kind: 'mask'; strategy: CompiledStrategy; rule: string; why: 'column' | 'lineage' | 'undecidable' }
  /** Not masked by a column rule: run the content detectors over its text. */
  | { kind: 'scan' };

export interface MaskingPlan {
  /** One entry per field; undefined = pass the bytes through. */
  actions: (ColumnAction | undefined)[];
  /** True when some action exists (otherwise the proxy need not touch DataRows). */
  any: boolean;
  /** Masked columns for audit: schema.table.column where resolved by identity, else the output name. */
  masked: string[];
}

const WHOLE_REDACT: CompiledStrategy = { type: 'redact', keepFirst: 0, keepLast: 0, key: Buffer.alloc(0) };
const WHOLE_NULL: CompiledStrategy = { type: 'null', keepFirst: 0, keepLast: 0, key: Buffer.alloc(0) };

/** Types whose text (and binary) representation is the string itself, or a JSON/XML document holding text. */
export const TEXT_TYPES = new Set([25, 1043, 1042, 19, 18, 705, 114, 3802, 142]);
/** Arrays of the above and anonymous records: scanned in text format. */
const SCANNABLE_CONTAINERS = new Set([1009, 1015, 1014, 1003, 199, 3807, 143, 2249]);
/** First OID for user-defined objects (FirstNormalObjectId): domains, citext, composites. */
const FIRST_USER_OID = 16384;

function scannable(f: PlanField): boolean {
  if (TEXT_TYPES.has(f.typeOid)) return true;
  if (f.format !== 0) return false;
  return SCANNABLE_CONTAINERS.has(f.typeOid) || f.typeOid >= FIRST_USER_OID;
}

export interface LineageVerdict {
  rule?: CompiledColumnRule;
  undecidable: boolean;
}

/** Does this lineage touch a masked column (or an untraceable input)? */
export function lineageVerdict(lin: Lineage, config: MaskingConfig, cat?: CatalogSnapshot): LineageVerdict {
  let rule: CompiledColumnRule | undefined;
  for (const key of lin.cols) {
    const [s, t, c] = splitColKey(key);
    rule = columnRuleFor(config, s, t, c, cat?.ancestors);
    if (rule) break;
  }
  return { rule, undecidable: lin.unknown };
}

function derived(v: LineageVerdict, config: MaskingConfig): ColumnAction | undefined {
  if (v.rule) {
    // A value computed from a masked column is masked whole: its strategy's shape (partial, email) would not
    // hide a transformed value (reverse(), base64).
    return {
      kind: 'mask',
      strategy: v.rule.strategy.type === 'null' ? WHOLE_NULL : WHOLE_REDACT,
      rule: v.rule.rule,
      why: 'lineage',
    };
  }
  if (v.undecidable && config.columns.length > 0)
    return { kind: 'mask', strategy: WHOLE_REDACT, rule: 'undecidable-lineage', why: 'undecidable' };
  return undefined;
}

/**
 * Builds the plan for one RowDescription. `lineage` is the per-field lineage of the statement that produced it
 * (from alignOutputs), or undefined when unknown (then expression columns count as undecidable).
 */
export function planColumns(
  fields: readonly PlanField[],
  lineage: readonly Lineage[] | undefined,
  config: MaskingConfig,
  cat: CatalogSnapshot,
): MaskingPlan {
  const plan: MaskingPlan = { actions: [], any: false, masked: [] };
  if (!config.active) return plan;
  const walker = new LineageWalker(cat, { predicate: emptyLineage(), written: emptyLineage() });
  const detect = config.detectors.length > 0;
  fields.forEach((f, i) => {
    let action: ColumnAction | undefined;
    let source = f.name;
    if (f.tableOid !== 0) {
      const rel = cat.byOid.get(f.tableOid);
      const col = rel?.columns.find((c) => c.attnum === f.columnAttr);
      if (rel && isSystemRelation(rel)) {
        if (LEAKY_SYSTEM_RELATIONS.has(rel.name)) action = derived({ undecidable: true }, config);
      } else if (!rel || !col) {
        // A relation or column the catalog snapshot does not know (created since, or in an uncommitted transaction).
        action = derived({ undecidable: true }, config);
      } else {
        source = `${rel.schema}.${rel.name}.${col.name}`;
        const rule = columnRuleFor(config, rel.schema, rel.name, col.name, cat.ancestors);
        if (rule) action = { kind: 'mask', strategy: rule.strategy, rule: rule.rule, why: 'column' };
        else if (rel.kind === 'v' || rel.kind === 'm')
          action = derived(lineageVerdict(walker.relationColumn(rel, col.name, col.attnum), config, cat), config);
      }
    } else if (config.lineage === 'strict') {
      action = derived(lineage ? lineageVerdict(lineage[i], config, cat) : { undecidable: true }, config);
    }
    if (!action && detect && scannable(f)) action = { kind: 'scan' };
    plan.actions.push(action);
    if (action) plan.any = true;
    if (action?.kind === 'mask') plan.masked.push(source);
  });
  return plan;
}

export interface MaskingDenial {
  /** SQLSTATE 42501 (insufficient_privilege), as for policy denials. */
  code: '42501';
  message: string;
  /** Stable reason for audit. */
  reason: 'masked-predicate' | 'masked-write' | 'masked-copy' | 'masked-ddl' | 'undecidable-lineage' | 'binary-copy';
}

const deny = (reason: MaskingDenial['reason'], message: string): MaskingDenial => ({ code: '42501', reason, message });

/** Statement-level decisions masking adds to the policy: predicates, writes and COPY over masked columns. */
export function checkMaskedUsage(
  analyses: readonly MaskAnalysis[],
  config: MaskingConfig,
  cat: CatalogSnapshot,
): MaskingDenial | undefined {
  if (!config.active) return undefined;
  const rules = config.columns.length > 0;
  for (const a of analyses) {
    if (rules && a.ddlTargets) {
      for (const [schema, name] of a.ddlTargets) {
        const rels = (cat.byName.get(name) ?? []).filter((r) => !schema || r.schema === schema);
        if (rels.some((r) => r.columns.some((c) => columnRuleFor(config, r.schema, r.name, c.name, cat.ancestors)))) {
          return deny(
            'masked-ddl',
            `relation ${name} has masked columns: it may not be renamed, moved, altered or given triggers or rules`,
          );
        }
      }
    }
    if (rules && config.predicates === 'deny') {
      const v = lineageVerdict(a.predicate, config, cat);
      if (v.rule)
        return deny(
          'masked-predicate',
          `masked column (rule ${v.rule.rule}) may not be used to filter, join, group or sort`,
        );
    }
    if (rules) {
      const v = lineageVerdict(a.written, config, cat);
      if (v.rule || v.undecidable)
        return deny('masked-write', 'values derived from masked columns may not be written to tables');
    }
    if (a.copyOut) {
      const v = lineageVerdict(a.copyOut.lin, config, cat);
      if (rules && (v.rule || v.undecidable))
        return deny('masked-copy', 'COPY TO of masked columns is not allowed; use SELECT');
      // COPY data reaches the client as CopyData text the scrubber rewrites; binary rows would be corrupted.
      if (a.copyOut.binary)
        return deny('binary-copy', 'binary COPY TO is not allowed while masking applies; use text format');
    }
    if (rules && config.undecidable === 'deny' && a.outputs.some((o) => o.lin.unknown)) {
      return deny(
        'undecidable-lineage',
        'the origin of an output column cannot be determined (masking policy denies such statements)',
      );
    }
  }
  return undefined;
}
