import { type ChainState, canonicalJson, formatAuditTime, hashCanonical, redactSecrets } from '@pgwarden/policy';
import type { StatementDetail, StatementRecord, StatementResult, Verdict } from '../proxy/hooks.js';
import type { StatementResultExtras } from './audit-recorder.js';
import { paramFormatsOf, type StatementEventOptions } from './statement-events.js';

/**
 * The canonical JSON of a session's `statement` events written directly, member by member in canonical key order,
 * instead of building the event object, copying it to seal it and sorting its keys generically (about half of
 * the audit cost per statement). Reproduces, byte for byte, what buildStatementEvents + sealEventToJson make of
 * the same record (statement-json.test.ts checks this over generated records); any change to one is a change
 * to both.
 */

/** The parts every statement event of one session repeats, encoded once. */
export interface StatementJsonSession {
  /** `"<session id>.` (the opening of the event id; the seq and closing quote follow). */
  idOpen: string;
  /** `{"id":"<session id>","seq":` */
  sessionOpen: string;
  /** `{"database":<database>,"decision":` */
  head: string;
  /** `,"identity":<identity>` */
  identity: string;
  /** `,"source":<source>,"statement":` */
  source: string;
  /** The last statement text encoded, and its JSON (a prepared statement repeats the same text object). */
  lastText: string | undefined;
  lastTextMax: number;
  lastTextJson: string;
}

export function statementJsonSession(
  sessionId: string,
  parts: { database: object; identity: object; source: object },
): StatementJsonSession {
  const quoted = JSON.stringify(sessionId);
  return {
    idOpen: quoted.slice(0, -1) + '.',
    sessionOpen: `{"id":${quoted},"seq":`,
    head: `{"database":${canonicalJson(parts.database)},"decision":`,
    identity: `,"identity":${canonicalJson(parts.identity)}`,
    source: `,"source":${canonicalJson(parts.source)},"statement":`,
    lastText: undefined,
    lastTextMax: 0,
    lastTextJson: '',
  };
}

/** Called once per sealed event with its JSON text (canonical encoding + `hash` as last member) and seq. */
export type SealedJsonSink = (json: string, seq: number) => void;

/**
 * Seals one event per statement of `record` into `chain` and hands each one's JSON text to `out`. `policy` is the
 * canonical JSON of the event's policy ref ('' for none); `time` gives each event's `time` (called once per event).
 * Returns how many events were sealed.
 */
export function sealStatementJson(
  s: StatementJsonSession,
  chain: ChainState,
  record: StatementRecord,
  opts: StatementEventOptions,
  policy: string,
  time: () => string,
  out: SealedJsonSink,
): number {
  const { verdict, request, results } = record;
  const details: StatementDetail[] | undefined = verdict.statements?.length ? verdict.statements : undefined;
  const n = details === undefined ? 1 : details.length;
  const combined = n === 1 && results.length > 1;
  const decision = decisionJson(verdict);
  const timing = `{"durationMs":${ms3(record.durationMs)},"heldMs":${ms3(record.heldMs)},"start":"${formatAuditTime(record.startedAt.getTime() * 1000)}","upstreamMs":${ms3(record.upstreamMs)}}`;
  const protocol = request.protocol === undefined ? '' : `,"protocol":${value(request.protocol)}`;
  const params = opts.captureParams ? (request as { params?: (string | null)[] }).params : undefined;
  // Key order is canonical (sorted): "paramFormats" sorts before "params".
  const paramsJson =
    params === undefined
      ? ''
      : `${formatsJson(params, (request as { paramFormats?: string[] }).paramFormats)},"params":${paramsToJson(params)}`;
  const policyJson = policy === '' ? '' : `,"policy":${policy}`;
  for (let i = 0; i < n; i++) {
    const d = details === undefined ? undefined : details[i];
    let statement = '';
    if (n > 1) statement += `,"count":${n}`;
    else if (combined) statement += `,"count":${num(results.length)}`;
    if (d?.fingerprint) statement += `,"fingerprint":${value(d.fingerprint)}`;
    statement += `,"functions":${d?.functions ? stringArray(d.functions) : '[]'}`;
    if (n > 1) statement += `,"index":${i}`;
    if (d?.kind) statement += `,"kind":${value(d.kind)}`;
    statement += paramsJson;
    statement += protocol;
    statement += `,"tables":${d?.tables ? stringArray(d.tables) : '[]'}`;
    statement += `,"text":${textJson(s, d === undefined ? request.sql : d.text, opts.maxTextChars)}}`;
    const res = combined ? mergeResults(results) : results[i];
    let result = '';
    let masking = '';
    if (res && (opts.captureResults !== 'none' || res.error)) {
      result = `,"result":${resultJson(res, opts.captureResults === 'rows')}`;
      const m = (res as StatementResultExtras).masking;
      if (m) masking = `,"masking":${canonicalJson({ columns: [...m.columns], cells: m.cells })}`;
    }
    const seq = chain.seq + 1;
    const prev = chain.prevHash;
    const canonical = `${s.head}${decision},"id":${s.idOpen}${seq}"${s.identity}${masking}${policyJson},"prevHash":${prev === null ? 'null' : `"${prev}"`}${result},"session":${s.sessionOpen}${seq}}${s.source}{${statement.slice(1)},"time":"${time()}","timing":${timing},"type":"statement","v":1}`;
    const hash = hashCanonical(canonical);
    chain.seq = seq;
    chain.prevHash = hash;
    out(`${canonical.slice(0, -1)},"hash":"${hash}"}`, seq);
  }
  return n;
}

function textJson(s: StatementJsonSession, text: string, max: number): string {
  if (text === s.lastText && max === s.lastTextMax) return s.lastTextJson;
  const json = JSON.stringify(cut(redactSecrets(text), max));
  s.lastText = text;
  s.lastTextMax = max;
  s.lastTextJson = json;
  return json;
}

/** A verdict's decision JSON and the members it was made from: verdicts are shared (allow-all, cached decisions). */
interface DecisionMemo {
  action: unknown;
  rule: unknown;
  reason: unknown;
  code: unknown;
  message: unknown;
  json: string;
}
const decisions = new WeakMap<Verdict, DecisionMemo>();

function decisionJson(v: Verdict): string {
  const code = v.action === 'deny' ? v.code : undefined;
  const message = v.action === 'deny' ? v.message : undefined;
  const memo = decisions.get(v);
  if (
    memo !== undefined &&
    memo.action === v.action &&
    memo.rule === v.rule &&
    memo.reason === v.reason &&
    memo.code === code &&
    memo.message === message
  ) {
    return memo.json;
  }
  const json = encodeDecision(v);
  decisions.set(v, { action: v.action, rule: v.rule, reason: v.reason, code, message, json });
  return json;
}

/** Members in canonical order (action, code, reason, rule), with the same presence rules as buildStatementEvents. */
function encodeDecision(v: Verdict): string {
  let m = v.action === undefined ? '' : `,"action":${value(v.action)}`;
  let reason: unknown = v.reason ? v.reason : undefined;
  if (v.action === 'deny') {
    if (v.code !== undefined) m += `,"code":${value(v.code)}`;
    if (!v.reason) reason = v.message;
  }
  if (reason !== undefined) m += `,"reason":${value(reason)}`;
  if (v.rule) m += `,"rule":${value(v.rule)}`;
  return m === '' ? '{}' : `{${m.slice(1)}}`;
}

/** Members bytes, changed, error, rows, sample, tag: toResult of statement-events.ts. */
function resultJson(r: StatementResult, withSample: boolean): string {
  let m = r.bytes === undefined ? '' : `,"bytes":${value(r.bytes)}`;
  if (r.changed !== undefined) m += `,"changed":${value(r.changed)}`;
  if (r.error) m += `,"error":${canonicalJson({ code: r.error.code, message: redactSecrets(r.error.message) })}`;
  if (r.rows !== undefined) m += `,"rows":${value(r.rows)}`;
  const sample = withSample ? (r as StatementResultExtras).sample : undefined;
  if (sample) m += `,"sample":${canonicalJson(sample)}`;
  if (r.tag) m += `,"tag":${value(r.tag)}`;
  return m === '' ? '{}' : `{${m.slice(1)}}`;
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

/** `,"paramFormats":[…]` when each param has a format (see statement-events.ts paramFormatsOf), else ''. */
function formatsJson(params: (string | null)[], formats: string[] | undefined): string {
  const f = paramFormatsOf(params, formats);
  return f === undefined ? '' : `,"paramFormats":${stringArray(f)}`;
}

function paramsToJson(params: (string | null)[]): string {
  let m = '';
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    // A hole stays a hole through Array.prototype.map and is written as null, like a null parameter.
    m += p === null || !(i in params) ? ',null' : `,${JSON.stringify(cut(redactSecrets(String(p)), 4096))}`;
  }
  return m === '' ? '[]' : `[${m.slice(1)}]`;
}

/** An array of strings; anything else (holes, non-strings) the generic encoder writes. */
function stringArray(a: readonly string[]): string {
  let m = '';
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v !== 'string') return canonicalJson([...a]);
    m += `,${JSON.stringify(v)}`;
  }
  return m === '' ? '[]' : `[${m.slice(1)}]`;
}

/** A member value as canonicalJson writes it (strings and numbers directly; anything else generically). */
function value(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') return num(v);
  return canonicalJson(v);
}

function num(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError('canonical JSON cannot encode a non-finite number');
  return String(n);
}

/** `.001` … `.999` as Number::toString ends them (trailing zeros dropped); index 0 is no fraction at all. */
const FRACTIONS = Array.from({ length: 1000 }, (_, i) =>
  i === 0 ? '' : `.${String(i).padStart(3, '0').replace(/0+$/, '')}`,
);

/**
 * num(Math.round(n * 1000) / 1000), the way statement-events.ts rounds durations, without converting a double to
 * text: k / 1000 for an integer k below 10^15 is written by Number::toString as its plain decimal digits (no exponent
 * at or above 0.001, and no shorter decimal names the same double), so integer part + fraction table is the same
 * text. Anything else takes the general route.
 */
function ms3(n: number): string {
  const k = Math.round(n * 1000);
  if (k > -1e15 && k < 1e15 && k !== 0) {
    const a = k < 0 ? -k : k;
    const rest = a % 1000;
    return `${k < 0 ? '-' : ''}${(a - rest) / 1000}${FRACTIONS[rest]}`;
  }
  return num(k / 1000);
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…[truncated ${s.length - max} chars]`;
}
