/**
 * Masking core (pure): detectors, strategies, rule compilation, lineage over the PostgreSQL parse tree, masking
 * plans per RowDescription, statement-level masking checks and free-text scrubbing. The sidecar supplies the
 * catalog snapshot and applies plans to DataRow bytes.
 */
export * from './catalog-snapshot.js';
export * from './detectors.js';
export * from './errors.js';
export * from './lineage.js';
export * from './masking-config.js';
export * from './masking-key-refs.js';
export * from './masking-plan.js';
export * from './search-path.js';
export { initMaskingParser, parseStatements } from './sql-parse.js';
export * from './statement-analysis.js';
export * from './strategies.js';
export * from './subject-match.js';
export * from './text-scrub.js';
export { hidesUserOperators } from './user-code.js';
