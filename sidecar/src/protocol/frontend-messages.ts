import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE } from './codes.js';
import { ProtocolError } from './errors.js';

/**
 * Decoders for the frontend (client → server) messages the proxy must understand, and builders for the ones it
 * sends upstream. Every decoder takes the whole message span `buf[start, end)` including the type byte (typed
 * messages) or length word (startup packets); bodies are described in
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
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
 * Statement and portal names are keys, not text: PostgreSQL compares their bytes, in whatever client_encoding the
 * session has, so they are decoded one character per byte (latin1, a bijection) and two names differ here exactly when
 * their bytes differ. `nameText` gives the UTF-8 reading for people and policies.
 */
function nameKey(buf: Buffer, pos: number, end: number, what: string): [string, number] {
  const z = cstringEnd(buf, pos, end);
  if (z < 0) throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', `unterminated string in ${what}`);
  // PostgreSQL keeps prepared statements and portals in hash tables keyed on NAMEDATALEN - 1 bytes: two names that
  // share their first 63 bytes are one statement there, so they must be one here too.
  return [buf.toString('latin1', pos, Math.min(z, pos + MAX_NAME_BYTES)), z + 1];
}

/** NAMEDATALEN - 1: the bytes of a name PostgreSQL keeps. */
const MAX_NAME_BYTES = 63;

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
  return cstring(buf, start + 5, end, 'Query')[0];
}

/** Parse: statement name, query string, then parameter type OIDs (ignored here). */
export function decodeParse(buf: Buffer, start: number, end: number): { name: string; sql: string } {
  const [name, p] = nameKey(buf, start + 5, end, 'Parse');
  const [sql] = cstring(buf, p, end, 'Parse');
  return { name, sql };
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

/** Describe and Close: 'S' (statement) or 'P' (portal), then the name. */
export function decodeTarget(buf: Buffer, start: number, end: number): { kind: 'S' | 'P'; name: string } {
  const k = buf[start + 5];
  if (end - start < 7 || (k !== 0x53 && k !== 0x50)) {
    throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'invalid Describe/Close target');
  }
  return { kind: k === 0x53 ? 'S' : 'P', name: nameKey(buf, start + 6, end, 'Describe/Close')[0] };
}

/** Execute: portal name, then int32 row limit (0 = no limit). */
export function decodeExecute(buf: Buffer, start: number, end: number): { portal: string; maxRows: number } {
  const [portal, p] = nameKey(buf, start + 5, end, 'Execute');
  if (p + 4 > end) throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'truncated Execute');
  return { portal, maxRows: buf.readInt32BE(p) };
}

/** FunctionCall: int32 function OID first. */
export function decodeFunctionCall(buf: Buffer, start: number, end: number): number {
  if (end - start < 9) throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'truncated FunctionCall');
  return buf.readUInt32BE(start + 5);
}

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

/**
 * A whole Bind's names and parameter values as an approver reads them: text-format values as UTF-8, binary ones as
 * `\x` hex (PostgreSQL's bytea output form), NULL as null. Throws ProtocolError on a malformed message.
 */
export function decodeBindValues(
  buf: Buffer,
  start: number,
  end: number,
): { portal: string; values: (string | null)[] } {
  const bad = () => new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'invalid Bind message');
  const names = decodeBindNames(buf, start, end);
  if (names === null) throw bad();
  let p = start + 5;
  p = buf.indexOf(0, p) + 1;
  p = buf.indexOf(0, p) + 1;
  if (p + 2 > end) throw bad();
  const nFormats = buf.readInt16BE(p);
  p += 2;
  if (nFormats < 0 || p + 2 * nFormats + 2 > end) throw bad();
  const formats: number[] = [];
  for (let i = 0; i < nFormats; i++, p += 2) formats.push(buf.readInt16BE(p));
  const n = buf.readInt16BE(p);
  p += 2;
  if (n < 0 || (nFormats > 1 && nFormats !== n)) throw bad();
  const values: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    if (p + 4 > end) throw bad();
    const len = buf.readInt32BE(p);
    p += 4;
    if (len === -1) {
      values.push(null);
      continue;
    }
    if (len < 0 || p + len > end) throw bad();
    const binary = (nFormats === 1 ? formats[0] : (formats[i] ?? 0)) === 1;
    values.push(binary ? `\\x${buf.toString('hex', p, p + len)}` : buf.toString('utf8', p, p + len));
    p += len;
  }
  return { portal: names.portal, values };
}
