import { randomBytes } from 'node:crypto';
import type { MaskingRuleSpec } from '../api/masking-rule-schema.js';
import { type DetectorName, isDetectorName } from './detectors.js';
import { globMatches, tableGlobMatches } from './name-glob.js';
import type { CompiledStrategy, StrategyType } from './strategies.js';
import { type MaskingSubject, subjectMatches } from './subject-match.js';

/** Policy-level switches (DatabaseAccessPolicy spec.masking). */
export interface MaskingSettings {
  /** strict: anything derived from a masked column is masked; direct: only plain references are. */
  lineage?: 'strict' | 'direct';
  /** deny: statements that filter, join, group or sort on a masked column are denied. */
  maskedColumnPredicates?: 'allow' | 'deny';
  /** mask (default): output columns whose lineage cannot be decided are masked; deny: such statements are denied. */
  undecidableLineage?: 'mask' | 'deny';
}

export interface CompiledColumnRule {
  rule: string;
  table: string;
  column: string;
  strategy: CompiledStrategy;
}

/** Everything the masking code needs for one session: rules already filtered by `unmaskedFor`. */
export interface MaskingConfig {
  columns: CompiledColumnRule[];
  detectors: DetectorName[];
  lineage: 'strict' | 'direct';
  predicates: 'allow' | 'deny';
  undecidable: 'mask' | 'deny';
  /** True when some rule applies to this subject at all. */
  active: boolean;
}

export interface MaskingRuleInput {
  name: string;
  spec: MaskingRuleSpec;
}

/** Resolves a strategy's keySecretRef to the key bytes (the sidecar reads mounted Secret files). */
export type KeyResolver = (ref: { name: string; key: string }) => Buffer | undefined;

/**
 * Without a configured key, hash/digits still mask, with a key drawn once per process: pseudonyms then join
 * within one sidecar's lifetime only. Never a fixed key: a known key would allow dictionary reversal.
 */
const processKey = randomBytes(32);

export function compileMasking(
  rules: readonly MaskingRuleInput[],
  settings: MaskingSettings | undefined,
  subject: MaskingSubject,
  resolveKey: KeyResolver = () => undefined,
): MaskingConfig {
  const columns: CompiledColumnRule[] = [];
  const detectors = new Set<DetectorName>();
  for (const r of rules) {
    if (subjectMatches(r.spec.unmaskedFor, subject)) continue;
    for (const c of r.spec.columns ?? []) {
      const ref = c.strategy.keySecretRef;
      columns.push({
        rule: r.name,
        table: c.table,
        column: c.column,
        strategy: {
          type: c.strategy.type as StrategyType,
          keepFirst: c.strategy.keepFirst ?? 0,
          keepLast: c.strategy.keepLast ?? 0,
          key: (ref && resolveKey(ref)) || processKey,
        },
      });
    }
    for (const d of r.spec.detectors ?? []) if (isDetectorName(d)) detectors.add(d);
  }
  return {
    columns,
    detectors: [...detectors],
    lineage: settings?.lineage ?? 'strict',
    predicates: settings?.maskedColumnPredicates ?? 'deny',
    undecidable: settings?.undecidableLineage ?? 'mask',
    active: columns.length > 0 || detectors.size > 0,
  };
}

/**
 * The first column rule covering schema.table.column, if any; with a catalog, a rule on any ancestor of the table
 * (partitioned or inheritance parent) covers it too, since a partition holds the parent's rows.
 */
export function columnRuleFor(
  config: MaskingConfig,
  schema: string,
  table: string,
  column: string,
  ancestors?: ReadonlyMap<string, ReadonlyArray<{ schema: string; name: string }>>,
): CompiledColumnRule | undefined {
  const direct = config.columns.find((c) => globMatches(c.column, column) && tableGlobMatches(c.table, schema, table));
  if (direct || !ancestors) return direct;
  for (const a of ancestors.get(`${schema}.${table}`) ?? []) {
    const rule = config.columns.find(
      (c) => globMatches(c.column, column) && tableGlobMatches(c.table, a.schema, a.name),
    );
    if (rule) return rule;
  }
  return undefined;
}
