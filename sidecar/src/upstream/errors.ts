/** Stable codes for failures talking to the upstream PostgreSQL; each maps to the SQLSTATE the client receives. */
export type UpstreamErrorCode =
  | 'PGW_UPSTREAM_CONNECT'
  | 'PGW_UPSTREAM_TIMEOUT'
  | 'PGW_UPSTREAM_TLS'
  | 'PGW_UPSTREAM_TLS_UNSUPPORTED'
  | 'PGW_UPSTREAM_AUTH_METHOD'
  | 'PGW_UPSTREAM_SCRAM'
  | 'PGW_UPSTREAM_REJECTED'
  | 'PGW_UPSTREAM_PROTOCOL'
  | 'PGW_UPSTREAM_CLOSED'
  | 'PGW_UPSTREAM_CREDENTIALS';

const SQLSTATE: Record<UpstreamErrorCode, string> = {
  PGW_UPSTREAM_CONNECT: '08006', // connection_failure
  PGW_UPSTREAM_TIMEOUT: '08001', // sqlclient_unable_to_establish_sqlconnection
  PGW_UPSTREAM_TLS: '08001',
  PGW_UPSTREAM_TLS_UNSUPPORTED: '08001',
  PGW_UPSTREAM_AUTH_METHOD: '08001',
  PGW_UPSTREAM_SCRAM: '28P01', // invalid_password
  PGW_UPSTREAM_REJECTED: '08004', // sqlserver_rejected_establishment_of_sqlconnection
  PGW_UPSTREAM_PROTOCOL: '08P01',
  PGW_UPSTREAM_CLOSED: '08006',
  PGW_UPSTREAM_CREDENTIALS: '08001',
};

/**
 * A failure reaching or authenticating to the upstream. Messages never contain credentials: they are built from
 * host/port, TLS verification results and PostgreSQL's own error text only.
 */
export class UpstreamError extends Error {
  readonly code: UpstreamErrorCode;
  readonly sqlstate: string;
  /** PostgreSQL's own SQLSTATE when the upstream answered with an ErrorResponse. */
  readonly upstreamCode?: string;

  constructor(
    code: UpstreamErrorCode,
    message: string,
    opts: { cause?: unknown; upstreamCode?: string; sqlstate?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UpstreamError';
    this.code = code;
    this.sqlstate = opts.sqlstate ?? SQLSTATE[code];
    this.upstreamCode = opts.upstreamCode;
  }
}
