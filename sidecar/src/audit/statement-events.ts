import {
  type AuditDecision,
  type AuditEvent,
  type AuditResult,
  type AuditStatement,
  formatAuditTime,
  redactSecrets,
} from '@pgwarden/policy';
import type { StatementDetail, StatementRecord, StatementResult } from '../proxy/hooks.js';
import type { StatementResultExtras } from './audit-recorder.js';

export interface StatementEventOptions {
  captureParams: boolean;
  maxTextChars: number;
  /**
   * The policy's `audit.captureResults`. none: no `result` block, except for a statement that failed (its error is
   * audit-relevant); summary (default): tag, rows, bytes, error; rows: also the sample, when one was taken.
   */
  captureResults?: 'none' | 'summary' | 'rows';
}

type StatementBody = Pick<AuditEvent, 'statement' | 'decision' | 'timing'> &
  Partial<Pick<AuditEvent, 'result' | 'masking'>>;

const r3 = (n: number) => Math.round(n * 1000) / 1000;

/**
 * One body per statement of a StatementRecord: the verdict's per-statement details zipped with the results in
 * order. A statement that never ran (denied, or after an error in a multi-statement Query) has no `result`.
 * Without details the request text stands for one statement carrying the combined result.
 */
export function buildStatementEvents(record: StatementRecord, opts: StatementEventOptions): StatementBody[] {
  const { verdict, request, results } = record;
  const details: StatementDetail[] = verdict.statements?.length ? verdict.statements : [{ text: request.sql }];
  const combined = details.length === 1 && results.length > 1;
  const decision: AuditDecision = { action: verdict.action };
  if (verdict.rule) decision.rule = verdict.rule;
  if (verdict.reason) decision.reason = verdict.reason;
  if (verdict.action === 'deny') {
    decision.code = verdict.code;
    if (!verdict.reason) decision.reason = verdict.message;
  }
  const timing = {
    start: formatAuditTime(record.startedAt.getTime() * 1000),
    durationMs: r3(record.durationMs),
    upstreamMs: r3(record.upstreamMs),
    heldMs: r3(record.heldMs),
  };
  const params = opts.captureParams ? (request as { params?: (string | null)[] }).params : undefined;
  return details.map((d, i) => {
    const statement: AuditStatement = {
      text: cut(redactSecrets(d.text), opts.maxTextChars),
      tables: d.tables ? [...d.tables] : [],
      functions: d.functions ? [...d.functions] : [],
      protocol: request.protocol,
    };
    if (d.kind) statement.kind = d.kind;
    if (d.fingerprint) statement.fingerprint = d.fingerprint;
    if (details.length > 1) {
      statement.index = i;
      statement.count = details.length;
    } else if (combined) {
      statement.count = results.length;
    }
    if (params) {
      statement.params = params.map((p) => (p === null ? null : cut(redactSecrets(String(p)), 4096)));
      const formats = paramFormatsOf(params, (request as { paramFormats?: string[] }).paramFormats);
      if (formats) statement.paramFormats = formats;
    }
    const body: StatementBody = { statement, decision, timing };
    const res = combined ? mergeResults(results) : results[i];
    if (res && (opts.captureResults !== 'none' || res.error)) {
      body.result = toResult(res, opts.captureResults === 'rows');
      const masking = (res as StatementResultExtras).masking;
      if (masking) body.masking = { columns: [...masking.columns], cells: masking.cells };
    }
    return body;
  });
}

/**
 * `statement.paramFormats`: each captured param's format (`text`, or `binary` shown as `\x` hex), only when there is
 * one per param (a note in place of the values has none). Added to schema v1 beside `params`, which keeps its form.
 */
export function paramFormatsOf(
  params: readonly (string | null)[],
  formats: readonly string[] | undefined,
): ('text' | 'binary')[] | undefined {
  if (formats === undefined || formats.length !== params.length) return undefined;
  for (const f of formats) if (f !== 'text' && f !== 'binary') return undefined;
  return formats as ('text' | 'binary')[];
}

function toResult(r: StatementResult, withSample: boolean): AuditResult {
  const out: AuditResult = { rows: r.rows, bytes: r.bytes };
  if (r.changed !== undefined) out.changed = r.changed;
  if (r.tag) out.tag = r.tag;
  if (r.error) out.error = { code: r.error.code, message: redactSecrets(r.error.message) };
  const sample = withSample ? (r as StatementResultExtras).sample : undefined;
  if (sample) out.sample = sample;
  return out;
}

function mergeResults(rs: StatementResult[]): StatementResult {
  const out: StatementResult = { rows: 0, bytes: 0 };
  for (const r of rs) {
    out.rows += r.rows;
    out.bytes += r.bytes;
    if (r.changed !== undefined) out.changed = r.changed;
    if (r.tag) out.tag = r.tag;
    if (r.error && !out.error) out.error = r.error;
  }
  return out;
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…[truncated ${s.length - max} chars]`;
}
