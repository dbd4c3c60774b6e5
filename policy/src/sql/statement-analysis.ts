import type { StatementKind } from '../api/access-policy-schema.js';
import type { StatementFacts } from './analysis-context.js';
import type { StatementAnalysis } from './analysis-types.js';

export function buildAnalysis(facts: StatementFacts, text: string, kind: StatementKind): StatementAnalysis {
  const kinds = [...facts.kinds];
  if (!kinds.includes(kind)) kinds.unshift(kind);
  const a: StatementAnalysis = {
    text,
    kind,
    kinds,
    relations: facts.relations,
    functions: facts.functions,
    writes: facts.writes,
    missingWhere: [...facts.missingWhere],
    dangerous: facts.dangerous,
  };
  if (facts.identityChange !== undefined) a.identityChange = facts.identityChange;
  if (facts.unknownPrepared !== undefined) a.unknownPrepared = facts.unknownPrepared;
  return a;
}
