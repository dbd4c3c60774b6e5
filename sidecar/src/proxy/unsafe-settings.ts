/**
 * Session settings under which PostgreSQL would read a statement's text differently from the policy engine, which
 * parses it as UTF-8 with standard_conforming_strings on:
 * - a client encoding whose multibyte characters may contain ASCII bytes: in SJIS `0x83 0x5C` is one character,
 *   but read as UTF-8 its second byte is a backslash that escapes the closing quote of an `E'…'` string, so the
 *   analyser would see one statement where PostgreSQL runs several. PostgreSQL allows these encodings for clients
 *   only, for the same reason (its own lexer would misread them);
 * - standard_conforming_strings off: `'x\''` ends at a different quote.
 * The policy engine refuses statements that set either; the proxy checks what the server reports (ParameterStatus),
 * which also covers role and database defaults and settings changed where the analyser cannot see (a function).
 */

/**
 * PostgreSQL's client-only encodings, by the canonical names the server reports in ParameterStatus. The policy
 * engine's check (policy/src/sql/session-settings.ts) reads any spelling a client may write; the proxy, which does
 * not depend on the policy package, only ever sees the server's canonical ones.
 */
const UNSAFE_CLIENT_ENCODINGS = new Set(['SJIS', 'SHIFT_JIS_2004', 'BIG5', 'GBK', 'UHC', 'GB18030', 'JOHAB']);

/** SQLSTATE of the refusal: feature_not_supported, as PostgreSQL answers an encoding it cannot serve. */
export const UNSAFE_SETTING_SQLSTATE = '0A000';

/** Why the setting the server reported makes statements unreadable to pgwarden; undefined when it does not. */
export function unsafeSetting(name: string, value: string): string | undefined {
  if (name === 'client_encoding' && UNSAFE_CLIENT_ENCODINGS.has(value.toUpperCase())) {
    return `client_encoding ${value} is not supported through pgwarden: its characters can contain ASCII bytes, so statements could not be checked as PostgreSQL reads them; use UTF8`;
  }
  if (name === 'standard_conforming_strings' && value !== 'on') {
    return `standard_conforming_strings ${value} is not supported through pgwarden: statements could not be checked as PostgreSQL reads them`;
  }
  return undefined;
}

/**
 * Thrown by the relay when the server reports an unsafe setting mid-session: the framer stops delivering at once
 * (nothing more reaches the client) and the session ends with FATAL 0A000, cancelling what is still running.
 */
export class UnsafeSettingError extends Error {
  readonly sqlstate = UNSAFE_SETTING_SQLSTATE;
}
