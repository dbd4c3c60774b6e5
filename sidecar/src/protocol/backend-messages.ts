import type { RowField } from '../proxy/hooks.js';
import { B } from './codes.js';
import { ProtocolError } from './errors.js';

/**
 * Builders and decoders for backend (server → client) messages.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

/** Fields of an ErrorResponse/NoticeResponse (https://www.postgresql.org/docs/current/protocol-error-fields.html). */
export interface ErrorFields {
  /** 'S': ERROR, FATAL, PANIC, WARNING, NOTICE, ... */
  severity: string;
  /** 'C': SQLSTATE. */
  code: string;
  /** 'M' */
  message: string;
  detail?: string;
  hint?: string;
  /** 'P': 1-based character position in the query string. */
  position?: number;
}

const FIELD_CODES: Array<[keyof ErrorFields, number]> = [
  ['detail', 0x44], // D
  ['hint', 0x48], // H
  ['position', 0x50], // P
];

function header(type: number, bodyLen: number): Buffer {
  const b = Buffer.allocUnsafe(5 + bodyLen);
  b[0] = type;
  b.writeInt32BE(4 + bodyLen, 1);
  return b;
}

/** ErrorResponse ('E') or, with `notice`, NoticeResponse ('N'). */
export function errorResponse(f: ErrorFields, notice = false): Buffer {
  const parts: string[] = [`S${f.severity}\0`, `V${f.severity}\0`, `C${f.code}\0`, `M${f.message}\0`];
  for (const [key, code] of FIELD_CODES) {
    const v = f[key];
    if (v !== undefined) parts.push(`${String.fromCharCode(code)}${v}\0`);
  }
  const body = Buffer.from(`${parts.join('')}\0`, 'utf8');
  const out = header(notice ? B.NoticeResponse : B.ErrorResponse, body.length);
  body.copy(out, 5);
  return out;
}

/** Decodes every field of an ErrorResponse/NoticeResponse into a map from field-type letter to value. */
export function decodeErrorFields(buf: Buffer, start: number, end: number): Map<string, string> {
  const out = new Map<string, string>();
  let pos = start + 5;
  while (pos < end && buf[pos] !== 0) {
    const code = String.fromCharCode(buf[pos]);
    const z = buf.indexOf(0, pos + 1);
    if (z < 0 || z >= end) throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'unterminated error field');
    out.set(code, buf.toString('utf8', pos + 1, z));
    pos = z + 1;
  }
  return out;
}

/** Re-encodes a field map (keeps PostgreSQL's fields and their order, e.g. after scrubbing the message text). */
export function encodeErrorFields(type: number, fields: Map<string, string>): Buffer {
  let s = '';
  for (const [k, v] of fields) s += `${k}${v}\0`;
  const body = Buffer.from(`${s}\0`, 'utf8');
  const out = header(type, body.length);
  body.copy(out, 5);
  return out;
}

export function readyForQuery(status: 'I' | 'T' | 'E'): Buffer {
  const b = header(B.ReadyForQuery, 1);
  b[5] = status.charCodeAt(0);
  return b;
}

function authMessage(code: number, extra: Buffer = Buffer.alloc(0)): Buffer {
  const b = header(B.Authentication, 4 + extra.length);
  b.writeInt32BE(code, 5);
  extra.copy(b, 9);
  return b;
}

export const authenticationOk = () => authMessage(0);
export const authenticationCleartextPassword = () => authMessage(3);
export const authenticationSASL = (mechanisms: string[]) =>
  authMessage(10, Buffer.from(`${mechanisms.map((m) => `${m}\0`).join('')}\0`, 'utf8'));
export const authenticationSASLContinue = (data: Buffer) => authMessage(11, data);
export const authenticationSASLFinal = (data: Buffer) => authMessage(12, data);

export function backendKeyData(processId: number, secretKey: number): Buffer {
  const b = header(B.BackendKeyData, 8);
  b.writeInt32BE(processId, 5);
  b.writeInt32BE(secretKey, 9);
  return b;
}

export function parameterStatus(name: string, value: string): Buffer {
  const body = Buffer.from(`${name}\0${value}\0`, 'utf8');
  const b = header(B.ParameterStatus, body.length);
  body.copy(b, 5);
  return b;
}

export function commandComplete(tag: string): Buffer {
  const body = Buffer.from(`${tag}\0`, 'utf8');
  const b = header(B.CommandComplete, body.length);
  body.copy(b, 5);
  return b;
}

/** DataRow from text values (null = SQL NULL). */
export function dataRow(values: Array<string | Buffer | null>): Buffer {
  const cols = values.map((v) => (v === null ? null : typeof v === 'string' ? Buffer.from(v, 'utf8') : v));
  let len = 2;
  for (const c of cols) len += 4 + (c?.length ?? 0);
  const b = header(B.DataRow, len);
  b.writeInt16BE(cols.length, 5);
  let pos = 7;
  for (const c of cols) {
    b.writeInt32BE(c === null ? -1 : c.length, pos);
    pos += 4;
    if (c) pos += c.copy(b, pos);
  }
  return b;
}

/** NegotiateProtocolVersion: the newest minor version this server speaks and the options it did not recognise. */
export function negotiateProtocolVersion(minor: number, unrecognized: string[]): Buffer {
  const names = Buffer.from(unrecognized.map((n) => `${n}\0`).join(''), 'utf8');
  const b = header(B.NegotiateProtocolVersion, 8 + names.length);
  b.writeInt32BE((3 << 16) | minor, 5);
  b.writeInt32BE(unrecognized.length, 9);
  names.copy(b, 13);
  return b;
}

export function rowDescription(fields: RowField[]): Buffer {
  const names = fields.map((f) => Buffer.from(`${f.name}\0`, 'utf8'));
  let len = 2;
  for (const n of names) len += n.length + 18;
  const b = header(B.RowDescription, len);
  b.writeInt16BE(fields.length, 5);
  let pos = 7;
  fields.forEach((f, i) => {
    pos += names[i].copy(b, pos);
    b.writeUInt32BE(f.tableOid, pos);
    b.writeInt16BE(f.columnAttr, pos + 4);
    b.writeUInt32BE(f.typeOid, pos + 6);
    b.writeInt16BE(f.typeSize, pos + 10);
    b.writeInt32BE(f.typeModifier, pos + 12);
    b.writeInt16BE(f.format, pos + 16);
    pos += 18;
  });
  return b;
}

export function decodeRowDescription(buf: Buffer, start: number, end: number): RowField[] {
  const count = buf.readInt16BE(start + 5);
  const fields: RowField[] = new Array(count);
  let pos = start + 7;
  for (let i = 0; i < count; i++) {
    const z = buf.indexOf(0, pos);
    if (z < 0 || z + 19 > end) throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'truncated RowDescription');
    fields[i] = {
      name: buf.toString('utf8', pos, z),
      tableOid: buf.readUInt32BE(z + 1),
      columnAttr: buf.readInt16BE(z + 5),
      typeOid: buf.readUInt32BE(z + 7),
      typeSize: buf.readInt16BE(z + 11),
      typeModifier: buf.readInt32BE(z + 13),
      format: buf.readInt16BE(z + 17),
    };
    pos = z + 19;
  }
  return fields;
}

/** A message whose body is one NUL-terminated string (CommandComplete tag). */
export function decodeCString(buf: Buffer, start: number, end: number): string {
  const z = buf.indexOf(0, start + 5);
  return buf.toString('utf8', start + 5, z < 0 || z >= end ? end : z);
}

export function decodeParameterStatus(buf: Buffer, start: number, end: number): [string, string] {
  const z1 = buf.indexOf(0, start + 5);
  const z2 = z1 < 0 ? -1 : buf.indexOf(0, z1 + 1);
  if (z1 < 0 || z2 < 0 || z2 >= end)
    throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'malformed ParameterStatus');
  return [buf.toString('utf8', start + 5, z1), buf.toString('utf8', z1 + 1, z2)];
}

/** NotificationResponse: int32 pid, channel, payload. */
export function decodeNotification(
  buf: Buffer,
  start: number,
  end: number,
): { pid: number; channel: string; payload: string } {
  const z1 = buf.indexOf(0, start + 9);
  const z2 = z1 < 0 ? -1 : buf.indexOf(0, z1 + 1);
  if (z1 < 0 || z2 < 0 || z2 >= end)
    throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'malformed NotificationResponse');
  return {
    pid: buf.readInt32BE(start + 5),
    channel: buf.toString('utf8', start + 9, z1),
    payload: buf.toString('utf8', z1 + 1, z2),
  };
}

export function notificationResponse(pid: number, channel: string, payload: string): Buffer {
  const body = Buffer.from(`${channel}\0${payload}\0`, 'utf8');
  const b = header(B.NotificationResponse, 4 + body.length);
  b.writeInt32BE(pid, 5);
  body.copy(b, 9);
  return b;
}

/** Wraps bytes as a message of `type` (CopyData after scrubbing, DataRow bodies after masking). */
export function message(type: number, body: Buffer): Buffer {
  const b = header(type, body.length);
  body.copy(b, 5);
  return b;
}
