/**
 * @pgwarden/policy — pure core: API schemas and types, SQL analysis, the decision engine. No I/O.
 *
 * API
 * - Types: DatabaseAccessPolicy, DatabaseAccessPolicySpec, PolicyRule, MaskingRule, MaskingRuleSpec, RenderedPolicy.
 * - Schemas: databaseAccessPolicySpecSchema, maskingRuleSpecSchema (the single source for types and CRDs).
 * - parsePolicyDocuments(yamlText) → { policies, maskingRules, errors }   (multi-document YAML, never throws)
 * - validatePolicySpec(spec) / validateMaskingRuleSpec(spec) → PolicyIssue[] (fills defaults in place)
 * - renderPolicy(policy, maskingRules) → RenderedPolicy; serializeRenderedPolicy(r); parseRenderedPolicy(json)
 *   (parseRenderedPolicy throws PolicyError with issues); renderPolicyDocuments(docs) → RenderedPolicy[]
 * - await initSqlParser() once; then everything is synchronous.
 * - createSessionState({ searchPath, user }) → SessionState: one per client session (search_path candidates,
 *   SQL-level prepared statements). Seed searchPath from upstream `SELECT current_schemas(false)`, user = role.
 * - analyzeSql(sql, session) → SqlAnalysis { ok, statements: StatementAnalysis[] } (cached by text + search_path)
 * - decide(policySpec, analysis, subject) → Decision { action, rule, reason, code, message, maxRows, timeoutMs,
 *   statements[] }. subject = the sidecar Identity ({ groups, namespace, serviceAccount, user }); pass the same
 *   object for a session so decisions are cached.
 * - resolveWithCatalog(analysis, policyCatalogOf(snapshot), session.searchPath) → the analysis with `t.f` field
 *   references and unqualified calls resolved against the database's catalog (user functions), before decide();
 *   resolvedByUnknownNames(analysis) afterwards: whether a name the catalog did not know decided it.
 *   resolveImpliedDanger(analysis, policyCatalogOf(snapshot), session.searchPath) → only the dangerous operations
 *   operators, aggregates, casts and writes run without a call in the text (for policies without function rules).
 * - lintPolicySpec(spec) → PolicyIssue[] (never-matching/shadowed rules, bad globs): `pgwarden policy lint`.
 */
export * from './api/access-policy-schema.js';
export * from './api/canonical-json.js';
export * from './api/label-selector.js';
export * from './api/load-documents.js';
export * from './api/masking-rule-schema.js';
export * from './api/objects.js';
export * from './api/render-policy.js';
export {
  ACTIONS,
  DANGEROUS_CATEGORIES,
  DETECTORS,
  MASKING_STRATEGIES,
  STATEMENT_KINDS,
} from './api/schema-parts.js';
export type { FromSchema } from './api/schema-types.js';
export * from './api/validate.js';
export * from './approvals/approval-messages.js';
export * from './approvals/decision-signature.js';
export * from './approvals/four-eyes.js';
export * from './audit/index.js';
export * from './control/control-messages.js';
export { ed25519KeyId, ed25519PrivateKey, ed25519PublicKey } from './crypto/ed25519-keys.js';
export { decide, ruleMatches } from './engine/decide.js';
export type { Decision, DecisionReason, StatementDecision, Subject } from './engine/decision-types.js';
export { parseDuration } from './engine/duration.js';
export { compileGlob, compileObjectGlob } from './engine/glob.js';
export { foldIdentity, sameIdentity } from './engine/identity-fold.js';
export { lookAlikeSkeleton } from './engine/look-alike-skeleton.js';
export * from './errors.js';
export { lintPolicySpec } from './lint/lint-policy.js';
export * from './masking/index.js';
export { isLoopbackHost } from './net/loopback-host.js';
// Explicit (not `export *`) so these names win over same-named exports of ./masking (ES star-export rules).
export type {
  DangerousUse,
  FieldCall,
  FunctionRef,
  RelationAccess,
  RelationRef,
  SqlAnalysis,
  StatementAnalysis,
} from './sql/analysis-types.js';
export { analysisCacheSize, analyzeSql, clearAnalysisCache } from './sql/analyze-sql.js';
export {
  type PolicyCatalog,
  policyCatalogOf,
  resolvedByUnknownNames,
  resolveImpliedDanger,
  resolveWithCatalog,
} from './sql/catalog-resolution.js';
export { parseSearchPathValue } from './sql/function-calls.js';
export { constantsOnlyAsValues } from './sql/grant-constants.js';
export { initSqlParser, isSqlParserReady, normalizeSql } from './sql/parser.js';
export { createSessionState, SessionState } from './sql/session-state.js';
export { warmUpSqlAnalysis } from './sql/warm-up.js';
