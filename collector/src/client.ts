/**
 * `@pgwarden/collector/client`: what talking to a collector needs, without the store, NATS or HTTP server behind it:
 * how the collector shows untrusted text (SQL, names, bound values) to people, and the signature states it reports.
 * The CLI's client commands (approvals, control, audit tail/sessions/findings/verify --collector) import this entry;
 * the package's own loads every part of the collector, which cost each of them ~0.5 s of CPU at start.
 * Nothing imported here may import the rest of the collector or @pgwarden/policy.
 */
export { boundValuesText, boundValueText } from './display/bound-values.js';
export { lookAlikeSkeleton, lookAlikes } from './display/look-alikes.js';
export { nonAsciiCharacters, terminalSafeJson, terminalSafeJsonText, visibleText } from './display/visible-text.js';
export { SIGNATURE_STATES, type SignatureState } from './signatures/signature-states.js';
