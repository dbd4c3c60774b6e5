import type { StatementKind } from '../api/access-policy-schema.js';
import type { StatementFacts } from './analysis-context.js';
import type { StatementAnalysis } from './analysis-types.js';

export function buildAnalysis(facts: StatementFacts, text: string, kind: StatementKind): StatementAnalysis {
  const kinds = [...facts.kinds];
  if (!kinds.includes(kind)) kinds.unshift(kind);
  // Copies, not the pushed-to arrays: those have room for 16 entries, and the analysis lives on in the cache
  // (~250 bytes less per cached analysis, so less for each young-generation collection to copy and promote).
  const a: StatementAnalysis = {
    text,
    kind,
    kinds,
    relations: facts.relations.slice(),
    functions: facts.functions.slice(),
    writes: facts.writes,
    missingWhere: [...facts.missingWhere],
    dangerous: facts.dangerous.slice(),
  };
  if (facts.fieldCalls.length > 0) a.fieldCalls = facts.fieldCalls.slice();
  if (facts.operators.length > 0) a.operators = facts.operators.slice();
  if (facts.casts.size > 0) a.casts = [...facts.casts];
  if (facts.identityChange !== undefined) a.identityChange = facts.identityChange;
  if (facts.truncates) a.truncates = true;
  if (facts.unsafeSetting !== undefined) a.unsafeSetting = facts.unsafeSetting;
  if (facts.unknownPrepared !== undefined) a.unknownPrepared = facts.unknownPrepared;
  return a;
}
