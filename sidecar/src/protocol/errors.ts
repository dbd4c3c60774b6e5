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
