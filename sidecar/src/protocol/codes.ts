/**
 * Protocol constants of the PostgreSQL frontend/backend protocol v3.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

/** Protocol 3.0 in a StartupMessage: major 3 in the high 16 bits, minor 0 in the low 16 bits. */
export const PROTOCOL_3_0 = 196608;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;

/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH (src/include/libpq/pqcomm.h). */
export const MAX_STARTUP_PACKET = 10000;
/** PostgreSQL's PQ_SMALL_MESSAGE_LIMIT for message types that never carry user data (src/include/libpq/libpq.h). */
export const SMALL_MESSAGE_LIMIT = 10000;
/** PostgreSQL's PQ_LARGE_MESSAGE_LIMIT: MaxAllocSize - 1, the 1 GB limit. */
export const LARGE_MESSAGE_LIMIT = 0x3fffffff - 1;
/** Default cap on Query/Parse text the proxy decodes (the sidecar's --max-statement-bytes). */
export const DEFAULT_MAX_STATEMENT_BYTES = 64 * 1024 * 1024;
/**
 * The default under a policy, which parses every statement on the sidecar's only thread. Parsing costs ~0.3 s and
 * ~+120 MiB of RSS per MiB of dense SQL (a 1 MiB CASE: 0.39 s, +126 MiB; 4 MiB: 1.2 s, +400 MiB), so one agent's
 * 64 MiB statement would stall every session for ~20 s and take the process past its memory limit.
 */
export const DEFAULT_ANALYZED_STATEMENT_BYTES = 1024 * 1024;

/** Frontend (client → server) message type bytes. */
export const F = {
  Bind: 0x42, // B
  Close: 0x43, // C
  Describe: 0x44, // D
  Execute: 0x45, // E
  FunctionCall: 0x46, // F
  Flush: 0x48, // H
  Parse: 0x50, // P
  Query: 0x51, // Q
  Sync: 0x53, // S
  Terminate: 0x58, // X
  CopyFail: 0x66, // f
  CopyDone: 0x63, // c
  CopyData: 0x64, // d
  Password: 0x70, // p (also SASLInitialResponse, SASLResponse, GSSResponse)
} as const;

/** Backend (server → client) message type bytes. */
export const B = {
  ParseComplete: 0x31, // 1
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  NotificationResponse: 0x41, // A
  CommandComplete: 0x43, // C
  DataRow: 0x44, // D
  ErrorResponse: 0x45, // E
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  EmptyQueryResponse: 0x49, // I
  BackendKeyData: 0x4b, // K
  NoticeResponse: 0x4e, // N
  Authentication: 0x52, // R
  ParameterStatus: 0x53, // S
  RowDescription: 0x54, // T
  FunctionCallResponse: 0x56, // V
  CopyBothResponse: 0x57, // W
  ReadyForQuery: 0x5a, // Z
  CopyDone: 0x63, // c
  CopyData: 0x64, // d
  NoData: 0x6e, // n
  PortalSuspended: 0x73, // s
  ParameterDescription: 0x74, // t
  NegotiateProtocolVersion: 0x76, // v
} as const;

/** Authentication request codes carried in an 'R' message. */
export const Auth = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

/**
 * Largest message PostgreSQL accepts for a frontend message type (postgres.c SocketBackend): the types that can
 * carry user data get the 1 GB limit, the rest the 10 000-byte limit.
 */
export function frontendLimit(type: number, maxStatementBytes: number): number {
  switch (type) {
    case F.Query:
    case F.Parse:
      return maxStatementBytes;
    case F.Bind:
    case F.CopyData:
    case F.FunctionCall:
      return LARGE_MESSAGE_LIMIT;
    case F.Password:
      return 65535; // PG_MAX_AUTH_TOKEN_LENGTH
    case F.Close:
    case F.Describe:
    case F.Execute:
    case F.Flush:
    case F.Sync:
    case F.Terminate:
    case F.CopyDone:
    case F.CopyFail:
      return SMALL_MESSAGE_LIMIT;
    default:
      return -1; // unknown type: PostgreSQL answers "invalid frontend message type" and closes
  }
}
