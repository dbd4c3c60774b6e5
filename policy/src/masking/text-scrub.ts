/**
 * Scrubbing of free text the column rules cannot see: error and notice fields, notification payloads, COPY data.
 *
 * Two layers. Content detectors mask secrets by shape everywhere. Echo redaction covers values PostgreSQL quotes
 * back in messages (`invalid input syntax for type integer: "Alice"`, `Key (email)=(a@b.c) already exists`,
 * `Failing row contains (...)`): a quoted or parenthesised part is kept only when the client itself sent it
 * (it occurs in the session's recent SQL) or it is a catalog identifier; otherwise it is replaced.
 */
import { type DetectorName, scrubSecrets } from './detectors.js';
import { REDACTED } from './strategies.js';

export type TextChannel = 'error' | 'notice' | 'notification' | 'copy';

export interface EchoContext {
  /** SQL texts the client sent recently (their literals and identifiers are not secrets to the client). */
  recentSql: readonly string[];
  /** Relation, column and constraint names PostgreSQL may quote. */
  isIdentifier(name: string): boolean;
}

function kept(inner: string, ctx: EchoContext): boolean {
  if (inner.length === 0) return true;
  if (ctx.isIdentifier(inner)) return true;
  return ctx.recentSql.some((sql) => sql.includes(inner));
}

/**
 * Input PostgreSQL echoes without quotes: libxml's error detail (`line 1: <message naming the input's tags>`, then the
 * input line itself, then a caret line) and the JSON parser's context (`JSON data, line 1: <the input>`).
 */
const XML_DETAIL = /^line \d+: /;
const JSON_CONTEXT = /^(JSON data, line \d+: )(.*)$/gm;
/**
 * Messages that end with a value PostgreSQL computed from the input, unquoted: `make_date`/`make_time`/
 * `make_timestamp` (`date field value out of range: 2020-01-219099999`), `chr()` (`requested character too large for
 * encoding: 78051120`), `setval` (`value 78051120 is out of bounds for sequence …`).
 */
const UNQUOTED_VALUE =
  /^((?:date |time |)field value out of range: |requested character too large for encoding: )(.+)$/gm;
const SEQUENCE_BOUNDS = /^(setval: value )(\S+)( is out of bounds for sequence)/gm;

/** Replaces quoted / parenthesised fragments the client did not send. */
export function redactEchoes(text: string, ctx: EchoContext): string {
  // The whole detail: the message names tags of the input, the next line is the input.
  if (XML_DETAIL.test(text) && !kept(text, ctx)) return REDACTED;
  // Innermost parentheses first, then double-quoted strings (PostgreSQL doubles embedded quotes).
  let out = text.replace(JSON_CONTEXT, (m, head: string, input: string) =>
    kept(input.replace(/\.\.\.$/, ''), ctx) ? m : `${head}${REDACTED}`,
  );
  out = out.replace(UNQUOTED_VALUE, (m, head: string, value: string) => (kept(value, ctx) ? m : `${head}${REDACTED}`));
  out = out.replace(SEQUENCE_BOUNDS, (m, head: string, value: string, tail: string) =>
    kept(value, ctx) ? m : `${head}${REDACTED}${tail}`,
  );
  out = out.replace(/\(([^()]*)\)/g, (m, inner: string) => {
    if (kept(inner, ctx)) return m;
    // A list of identifiers, as in `Key (a, b)=(...)`.
    if (inner.split(/,\s*/).every((p) => ctx.isIdentifier(p))) return m;
    return `(${REDACTED})`;
  });
  out = out.replace(/"((?:[^"]|"")*)"/g, (m, inner: string) =>
    kept(inner.replace(/""/g, '"'), ctx) ? m : `"${REDACTED}"`,
  );
  return out;
}

/**
 * Scrubs one text. Without an explicit channel, text ending in a newline is taken as COPY data (every text-format
 * COPY row ends with one) and anything else as a message.
 */
export function scrubFreeText(
  text: string,
  detectors: readonly DetectorName[],
  echo: EchoContext | undefined,
  channel?: TextChannel,
): string {
  const ch = channel ?? (text.endsWith('\n') ? 'copy' : 'error');
  let out = scrubSecrets(text, detectors);
  if (echo && ch !== 'copy') out = redactEchoes(out, echo);
  return out;
}
