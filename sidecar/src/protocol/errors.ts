/** Stable codes for wire-protocol violations; each maps to the SQLSTATE PostgreSQL would send. */
export type ProtocolErrorCode =
  | 'PGW_PROTO_STARTUP_LENGTH'
  | 'PGW_PROTO_STARTUP_VERSION'
  | 'PGW_PROTO_STARTUP_MALFORMED'
  | 'PGW_PROTO_MESSAGE_TYPE'
  | 'PGW_PROTO_MESSAGE_LENGTH'
  | 'PGW_PROTO_MESSAGE_MALFORMED'
  | 'PGW_PROTO_STATEMENT_TOO_LARGE';

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  /** SQLSTATE for the ErrorResponse sent to the peer: 08P01 protocol_violation, 54000 program_limit_exceeded. */
  readonly sqlstate: string;

  constructor(code: ProtocolErrorCode, message: string, sqlstate = '08P01') {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.sqlstate = sqlstate;
  }
}

/**
 * Where PostgreSQL's reading of a frontend message body stops (src/backend/libpq/pqformat.c, postgres.c), each an
 * ERROR 08P01 that it goes on from: `string` "invalid string in message" (no NUL before the end), `short`
 * "insufficient data left in message", `trailing` "invalid message format" (bytes after the last field), `empty` "no
 * data left in message" (a Describe or Close without its subtype byte), `subtype` "invalid DESCRIBE/CLOSE message
 * subtype N".
 */
export type BodyFault = 'string' | 'short' | 'trailing' | 'empty' | 'subtype';

const FAULT_TEXT: Record<Exclude<BodyFault, 'subtype'>, string> = {
  string: 'invalid string in message',
  short: 'insufficient data left in message',
  trailing: 'invalid message format',
  empty: 'no data left in message',
};

/**
 * A frontend message with valid framing whose body PostgreSQL would fail to read. Unlike a bad type byte or length
 * (FATAL: the message boundaries are lost), the session goes on; see frontend-messages.ts `failingLike`.
 */
export class MalformedBody extends ProtocolError {
  readonly type: number;
  readonly fault: BodyFault;
  /** The Describe or Close subtype byte, for `subtype`. */
  readonly subtype: number;

  constructor(type: number, fault: BodyFault, subtype = 0) {
    const what = type === 0x44 ? 'DESCRIBE' : 'CLOSE';
    super(
      'PGW_PROTO_MESSAGE_MALFORMED',
      fault === 'subtype' ? `invalid ${what} message subtype ${subtype}` : FAULT_TEXT[fault],
    );
    this.name = 'MalformedBody';
    this.type = type;
    this.fault = fault;
    this.subtype = subtype;
  }
}
