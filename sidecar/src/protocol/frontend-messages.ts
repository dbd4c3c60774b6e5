import { CANCEL_REQUEST_CODE, F, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE } from './codes.js';
import { MalformedBody, ProtocolError } from './errors.js';

/**
 * Decoders for the frontend (client → server) messages the proxy must understand, and builders for the ones it
 * sends upstream. Every decoder takes the whole message span `buf[start, end)` including the type byte (typed
 * messages) or length word (startup packets); bodies are described in
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 *
 * The decoders of typed messages read a body as PostgreSQL 15 reads it (postgres.c, field by field through
 * pqformat.c, the last field followed by `pq_getmsgend`) and throw MalformedBody where PostgreSQL's reading stops.
 */

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | { kind: 'startup'; major: number; minor: number; params: Record<string, string> };

/** Reads a NUL-terminated UTF-8 string at `pos`; returns its end (index of the NUL) or -1 when unterminated. */
export function cstringEnd(buf: Buffer, pos: number, end: number): number {
  const i = buf.indexOf(0, pos);
  return i < 0 || i >= end ? -1 : i;
}

function cstring(buf: Buffer, pos: number, end: number, what: string): [string, number] {
  const z = cstringEnd(buf, pos, end);
  if (z < 0) throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', `unterminated string in ${what}`);
  return [buf.toString('utf8', pos, z), z + 1];
}

/**
 * Statement and portal names are keys, not text: PostgreSQL compares their bytes (after converting them to the server
 * encoding), so they are decoded one character per byte (latin1, a bijection) and two names differ here exactly when
 * their bytes differ; `trackedName` says when that is PostgreSQL's reading too. `nameText` gives the UTF-8 reading
 * for people and policies.
 */
function nameKey(buf: Buffer, start: number, pos: number, end: number): [string, number] {
  const z = cstringEnd(buf, pos, end);
  if (z < 0) throw new MalformedBody(buf[start], 'string');
  // PostgreSQL keeps prepared statements and portals in hash tables keyed on NAMEDATALEN - 1 bytes: two names that
  // share their first 63 bytes are one statement there, so they must be one here too.
  return [buf.toString('latin1', pos, Math.min(z, pos + MAX_NAME_BYTES)), z + 1];
}

/** NAMEDATALEN - 1: the bytes of a name PostgreSQL keeps. */
const MAX_NAME_BYTES = 63;

/**
 * Whether a name key is the name PostgreSQL keys on, now and for the rest of the session: only an ASCII name is.
 * PostgreSQL converts a name from client_encoding to the server encoding (pq_getmsgstring) before it keeps its first
 * 63 bytes, so two non-ASCII names that differ here can be one statement there (LATIN1 'é' × 32 + 'a' and + 'b'
 * are both 31½ 'é' in UTF-8), and the same bytes are another name after a change of client_encoding (C3 A9 is 'é' in
 * UTF8, 'Ã©' in LATIN1), which a client can pipeline ahead of the proxy's seeing it. ASCII bytes are themselves in
 * every encoding the proxy allows (unsafe-settings.ts). Other names are never given a verdict: a Parse is refused,
 * a portal bound with one is unchecked. Drivers name their statements in ASCII (S_1, __asyncpg_stmt_1__, _pg3_0).
 */
export function trackedName(key: string): boolean {
  return !NON_ASCII.test(key);
}

/** A name key (nameKey) as UTF-8 text; the key itself when it is ASCII, as nearly all are. */
export function nameText(key: string): string {
  return NON_ASCII.test(key) ? Buffer.from(key, 'latin1').toString('utf8') : key;
}

/** The key of a name read as UTF-8 text (from SQL); undefined when that reading lost bytes (U+FFFD). */
export function textKey(text: string): string | undefined {
  if (!NON_ASCII.test(text)) return text;
  return text.includes('\uFFFD') ? undefined : Buffer.from(text, 'utf8').toString('latin1');
}

const NON_ASCII = /[^\x00-\x7f]/;

export function parseStartupPacket(buf: Buffer, start: number, end: number): StartupPacket {
  const code = buf.readInt32BE(start + 4);
  if (code === SSL_REQUEST_CODE) return { kind: 'ssl' };
  if (code === GSSENC_REQUEST_CODE) return { kind: 'gssenc' };
  if (code === CANCEL_REQUEST_CODE) {
    if (end - start !== 16) throw new ProtocolError('PGW_PROTO_STARTUP_MALFORMED', 'invalid length of cancel request');
    return { kind: 'cancel', processId: buf.readInt32BE(start + 8), secretKey: buf.readInt32BE(start + 12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    throw new ProtocolError(
      'PGW_PROTO_STARTUP_VERSION',
      `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
      '0A000',
    );
  }
  // Pairs of NUL-terminated name and value, then one terminating NUL (protocol-message-formats, StartupMessage).
  const params: Record<string, string> = Object.create(null);
  let pos = start + 8;
  for (;;) {
    if (pos >= end)
      throw new ProtocolError(
        'PGW_PROTO_STARTUP_MALFORMED',
        'invalid startup packet layout: expected terminator as last byte',
      );
    if (buf[pos] === 0) {
      if (pos !== end - 1)
        throw new ProtocolError(
          'PGW_PROTO_STARTUP_MALFORMED',
          'invalid startup packet layout: expected terminator as last byte',
        );
      break;
    }
    let name: string;
    let value: string;
    [name, pos] = cstring(buf, pos, end, 'startup packet');
    [value, pos] = cstring(buf, pos, end, 'startup packet');
    params[name] = value;
  }
  return { kind: 'startup', major, minor, params };
}

/** Query: one string. */
export function decodeQuery(buf: Buffer, start: number, end: number): string {
  const z = cstringEnd(buf, start + 5, end);
  if (z < 0) throw new MalformedBody(buf[start], 'string');
  if (z !== end - 1) throw new MalformedBody(buf[start], 'trailing');
  return buf.toString('utf8', start + 5, z);
}

/** Parse: statement name, query string, int16 count of parameter type OIDs, the OIDs (not needed here). */
export function decodeParse(buf: Buffer, start: number, end: number): { name: string; sql: string } {
  const [name, p] = nameKey(buf, start, start + 5, end);
  const z = cstringEnd(buf, p, end);
  if (z < 0) throw new MalformedBody(buf[start], 'string');
  if (z + 3 > end) throw new MalformedBody(buf[start], 'short');
  // PostgreSQL reads the count unsigned (pq_getmsgint), so 0xffff is 65535 OIDs, not -1.
  const oidsEnd = z + 3 + 4 * buf.readUInt16BE(z + 1);
  if (oidsEnd > end) throw new MalformedBody(buf[start], 'short');
  if (oidsEnd !== end) throw new MalformedBody(buf[start], 'trailing');
  return { name, sql: buf.toString('utf8', p, z) };
}

/**
 * Bind starts with the portal name and the statement name. Works on a prefix of the message: returns null when the
 * two names are not both inside `buf[start, availEnd)`.
 */
export function decodeBindNames(
  buf: Buffer,
  start: number,
  availEnd: number,
): { portal: string; statement: string } | null {
  const z1 = cstringEnd(buf, start + 5, availEnd);
  if (z1 < 0) return null;
  const z2 = cstringEnd(buf, z1 + 1, availEnd);
  if (z2 < 0) return null;
  return {
    portal: buf.toString('latin1', start + 5, Math.min(z1, start + 5 + MAX_NAME_BYTES)),
    statement: buf.toString('latin1', z1 + 1, Math.min(z2, z1 + 1 + MAX_NAME_BYTES)),
  };
}

/**
 * A Bind's portal and statement names read as the message passes, piece by piece, for names longer than the prefix
 * decodeBindNames is given: PostgreSQL reads names of any length (pq_getmsgstring) and keys them on their first 63
 * bytes, which is all that is kept here.
 */
export class BindNameScanner {
  /** Header bytes (type and length) still to skip. */
  private skip = 5;
  private field = 0;
  private readonly kept = [Buffer.alloc(MAX_NAME_BYTES), Buffer.alloc(MAX_NAME_BYTES)];
  private readonly lens = [0, 0];

  /** Reads the next piece of the message; returns the names once both have ended, else null. */
  push(buf: Buffer, start: number, end: number): { portal: string; statement: string } | null {
    let i = start + Math.min(this.skip, end - start);
    this.skip -= i - start;
    while (i < end && this.field < 2) {
      const z = buf.subarray(i, end).indexOf(0);
      const stop = z < 0 ? end : i + z;
      const f = this.field;
      const room = MAX_NAME_BYTES - this.lens[f];
      if (room > 0) this.lens[f] += buf.copy(this.kept[f], this.lens[f], i, Math.min(stop, i + room));
      i = stop;
      if (z >= 0) {
        this.field++;
        i++;
      }
    }
    if (this.field < 2) return null;
    return {
      portal: this.kept[0].toString('latin1', 0, this.lens[0]),
      statement: this.kept[1].toString('latin1', 0, this.lens[1]),
    };
  }
}

/**
 * Describe and Close: 'S' (statement) or 'P' (portal), then the name. PostgreSQL reads both fields and the end of
 * the message before it looks at the subtype.
 */
export function decodeTarget(buf: Buffer, start: number, end: number): { kind: 'S' | 'P'; name: string } {
  if (end - start < 6) throw new MalformedBody(buf[start], 'empty');
  const [name, p] = nameKey(buf, start, start + 6, end);
  if (p !== end) throw new MalformedBody(buf[start], 'trailing');
  const k = buf[start + 5];
  if (k !== 0x53 && k !== 0x50) throw new MalformedBody(buf[start], 'subtype', k);
  return { kind: k === 0x53 ? 'S' : 'P', name };
}

/** Execute: portal name, then int32 row limit (0 = no limit). */
export function decodeExecute(buf: Buffer, start: number, end: number): { portal: string; maxRows: number } {
  const [portal, p] = nameKey(buf, start, start + 5, end);
  if (p + 4 > end) throw new MalformedBody(buf[start], 'short');
  if (p + 4 !== end) throw new MalformedBody(buf[start], 'trailing');
  return { portal, maxRows: buf.readInt32BE(p) };
}

/** FunctionCall: int32 function OID first; PostgreSQL reads the rest itself (the proxy forwards it). */
export function decodeFunctionCall(buf: Buffer, start: number, end: number): number {
  if (end - start < 9) throw new MalformedBody(buf[start], 'short');
  return buf.readUInt32BE(start + 5);
}

/**
 * A message of the same type as a malformed one that PostgreSQL fails to read at the same step, with the same
 * error: sent upstream in its place, so that the error, what it does to the transaction (a block fails, a batch
 * rolls back and skips to Sync) and what it leaves of statements and portals (nothing changes) are PostgreSQL's
 * own. None of its bytes come from the client, only the Describe/Close subtype PostgreSQL names in its message.
 */
export function failingLike(e: MalformedBody): Buffer {
  const target = e.type === F.Describe || e.type === F.Close;
  switch (e.fault) {
    case 'string':
      return typed(e.type, target ? Buffer.from('S') : Buffer.alloc(0));
    case 'empty':
      return typed(e.type, Buffer.alloc(0));
    case 'subtype':
      return typed(e.type, Buffer.from([e.subtype, 0]));
    case 'short':
      // Empty strings where the message has them, then nothing where a number belongs.
      return typed(e.type, Buffer.alloc(e.type === F.Parse ? 2 : e.type === F.Execute ? 1 : 0));
    case 'trailing':
      return typed(e.type, Buffer.concat([TRAILING_PREFIX[e.type] ?? Buffer.alloc(0), Buffer.from('x')]));
  }
}

/** The shortest whole body of each type (Flush and Sync: none), which a `trailing` substitute follows with a byte. */
const TRAILING_PREFIX: Record<number, Buffer> = {
  [F.Query]: Buffer.alloc(1), // ''
  [F.Parse]: Buffer.alloc(4), // '', '', no parameter types
  [F.Execute]: Buffer.alloc(5), // '', no row limit
  [F.Describe]: Buffer.from([0x53, 0]), // 'S', ''
  [F.Close]: Buffer.from([0x53, 0]),
};

/** PasswordMessage: a NUL-terminated password. */
export function decodePassword(buf: Buffer, start: number, end: number): string {
  return cstring(buf, start + 5, end, 'PasswordMessage')[0];
}

// ---- builders for what the proxy sends upstream ----

function typed(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

const z = (s: string) => Buffer.from(`${s}\0`, 'utf8');
/** A name key (nameKey) back to its bytes. */
const zk = (s: string) => Buffer.from(`${s}\0`, 'latin1');

export function startupMessage(params: Record<string, string>): Buffer {
  const parts = [Buffer.alloc(8)];
  for (const [k, v] of Object.entries(params)) parts.push(z(k), z(v));
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(196608, 4);
  return out;
}

export function sslRequest(): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(SSL_REQUEST_CODE, 4);
  return b;
}

export function cancelRequest(processId: number, secretKey: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  b.writeInt32BE(processId, 8);
  b.writeInt32BE(secretKey, 12);
  return b;
}

export const passwordMessage = (password: string) => typed(0x70, z(password));

export function saslInitialResponse(mechanism: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeInt32BE(data.length, 0);
  return typed(0x70, Buffer.concat([z(mechanism), len, data]));
}

export const saslResponse = (data: Buffer) => typed(0x70, data);
export const queryMessage = (sql: string) => typed(0x51, z(sql));
export const parseMessage = (name: string, sql: string) =>
  typed(0x50, Buffer.concat([zk(name), z(sql), Buffer.alloc(2)]));
export const describeMessage = (kind: 'S' | 'P', name: string) =>
  typed(0x44, Buffer.concat([Buffer.from(kind), zk(name)]));

export function executeMessage(portal: string, maxRows: number): Buffer {
  const name = zk(portal);
  const b = Buffer.alloc(name.length + 4);
  name.copy(b, 0);
  b.writeInt32BE(maxRows, name.length);
  return typed(0x45, b);
}

/** A Bind of `statement` to `portal` with no parameters and text results. */
export const bindMessage = (portal: string, statement: string) =>
  typed(0x42, Buffer.concat([zk(portal), zk(statement), Buffer.alloc(6)]));
export const closeMessage = (kind: 'S' | 'P', name: string) =>
  typed(0x43, Buffer.concat([Buffer.from(kind), zk(name)]));

export const syncMessage = () => typed(0x53, Buffer.alloc(0));
/** CopyFail: ends a COPY FROM STDIN with an error carrying `reason`. */
export const copyFailMessage = (reason: string) => typed(0x66, zk(reason));
export const terminateMessage = () => typed(0x58, Buffer.alloc(0));

/** A FunctionCall of `oid` with no arguments and a text result. */
export function functionCallMessage(oid: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32BE(oid >>> 0, 0);
  b.writeInt16BE(0, 4); // argument format codes
  b.writeInt16BE(0, 6); // arguments
  b.writeInt16BE(0, 8); // result format: text
  return typed(0x46, b.subarray(0, 10));
}

/** The format a Bind sent a parameter value in (its format code: 0 text, 1 binary). */
export type ParamFormat = 'text' | 'binary';

/**
 * A whole Bind's names and parameter values as an approver reads them: text-format values as UTF-8, binary ones as
 * `\x` hex (PostgreSQL's bytea output form), NULL as null, and each value's format, since a text value can itself
 * read `\x41`. Throws ProtocolError where PostgreSQL's reading of the same fields fails (exec_bind_message; it reads
 * the counts unsigned), so PostgreSQL refuses whatever this refuses.
 */
export function decodeBindValues(
  buf: Buffer,
  start: number,
  end: number,
): { portal: string; values: (string | null)[]; formats: ParamFormat[] } {
  const bad = () => new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'invalid Bind message');
  const names = decodeBindNames(buf, start, end);
  if (names === null) throw bad();
  let p = start + 5;
  p = buf.indexOf(0, p) + 1;
  p = buf.indexOf(0, p) + 1;
  if (p + 2 > end) throw bad();
  const nFormats = buf.readUInt16BE(p);
  p += 2;
  if (p + 2 * nFormats + 2 > end) throw bad();
  const formats: number[] = [];
  for (let i = 0; i < nFormats; i++, p += 2) formats.push(buf.readInt16BE(p));
  const n = buf.readUInt16BE(p);
  p += 2;
  if (nFormats > 1 && nFormats !== n) throw bad();
  const values: (string | null)[] = [];
  const valueFormats: ParamFormat[] = [];
  for (let i = 0; i < n; i++) {
    if (p + 4 > end) throw bad();
    const len = buf.readInt32BE(p);
    p += 4;
    const binary = (nFormats === 1 ? formats[0] : (formats[i] ?? 0)) === 1;
    valueFormats.push(binary ? 'binary' : 'text');
    if (len === -1) {
      values.push(null);
      continue;
    }
    if (len < 0 || p + len > end) throw bad();
    values.push(binary ? `\\x${buf.toString('hex', p, p + len)}` : buf.toString('utf8', p, p + len));
    p += len;
  }
  return { portal: names.portal, values, formats: valueFormats };
}
