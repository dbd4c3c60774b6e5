import { readFileSync, statSync } from 'node:fs';
import { isIP, type Socket, connect as tcpConnect } from 'node:net';
import {
  type ConnectionOptions,
  checkServerIdentity,
  createSecureContext,
  type SecureContext,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import { decodeErrorFields } from '../protocol/backend-messages.js';
import { Auth, B } from '../protocol/codes.js';
import {
  passwordMessage,
  saslInitialResponse,
  saslResponse,
  sslRequest,
  startupMessage,
} from '../protocol/frontend-messages.js';
import { type ChannelBindingMode, tlsServerEndPoint } from './channel-binding.js';
import { UpstreamError } from './errors.js';
import { MessageReader } from './message-reader.js';
import { md5Response, type ScramBinding, ScramClient } from './scram.js';

/** libpq's sslmode values the sidecar supports (https://www.postgresql.org/docs/current/libpq-ssl.html). */
export type SslMode = 'disable' | 'require' | 'verify-ca' | 'verify-full';

export interface UpstreamTarget {
  host: string;
  port: number;
  database: string;
  sslmode: SslMode;
  /** PEM file of the CA(s) that sign the server certificate; without it the system store is used for verify-*. */
  caFile?: string;
  /** libpq's channel_binding (default prefer): SCRAM-SHA-256-PLUS over TLS when the server offers it (channel-binding.ts). */
  channelBinding?: ChannelBindingMode;
  connectTimeoutMs?: number;
}

/** How the upstream authenticated the login (libpq's names; `trust`: the server asked for nothing). */
export type UpstreamAuth = 'SCRAM-SHA-256-PLUS' | 'SCRAM-SHA-256' | 'md5' | 'password' | 'trust';

export interface Credentials {
  username: string;
  password: string;
}

/** An authenticated upstream session, ready for queries (its first ReadyForQuery has been read). */
export interface UpstreamSession {
  socket: Socket;
  tls: boolean;
  auth: UpstreamAuth;
  /** ParameterStatus values in the order PostgreSQL sent them. */
  parameters: Array<[string, string]>;
  processId: number;
  secretKey: number;
  txStatus: 'I' | 'T' | 'E';
  /** Bytes that arrived after the first ReadyForQuery (normally empty). */
  leftover: Buffer;
}

let contextCache: { key: string; context: SecureContext } | null = null;

/**
 * Building a TLS context parses the CA bundle (and the system store); doing it once per CA file version instead of
 * per connection takes that cost off every connect. The file's mtime is checked so a rotated CA is picked up.
 */
function secureContextFor(caFile: string | undefined): SecureContext {
  try {
    const key = caFile ? `${caFile}:${statSync(caFile).mtimeMs}` : '';
    if (contextCache?.key !== key) {
      contextCache = { key, context: createSecureContext(caFile ? { ca: readFileSync(caFile) } : {}) };
    }
    return contextCache.context;
  } catch (err) {
    throw new UpstreamError('PGW_UPSTREAM_TLS', `cannot use CA file ${caFile}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Opens TCP (and TLS per sslmode) to the upstream; the returned socket is ready for a startup or cancel packet. */
export async function openTransport(target: UpstreamTarget): Promise<{ socket: Socket; tls: boolean }> {
  const timeoutMs = target.connectTimeoutMs ?? 10_000;
  const where = `${target.host}:${target.port}`;
  const raw = await new Promise<Socket>((resolve, reject) => {
    const s = tcpConnect({ host: target.host, port: target.port });
    s.setNoDelay(true);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UpstreamError('PGW_UPSTREAM_TIMEOUT', `timed out connecting to upstream ${where}`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.off('error', onError);
      resolve(s);
    });
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new UpstreamError(
          'PGW_UPSTREAM_CONNECT',
          `could not connect to upstream ${where}: ${err.code ?? err.message}`,
          { cause: err },
        ),
      );
    };
    s.once('error', onError);
  });
  if (target.sslmode === 'disable') return { socket: raw, tls: false };
  // SSLRequest; the server answers one byte, 'S' to proceed with a TLS handshake or 'N' to refuse
  // (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL).
  const reader = new MessageReader(raw, 'upstream');
  raw.write(sslRequest());
  let answer: number;
  try {
    answer = await reader.byte();
  } catch (err) {
    raw.destroy();
    throw err;
  }
  const extra = reader.detach();
  if (answer !== 0x53 || extra.length > 0) {
    raw.destroy();
    throw new UpstreamError(
      'PGW_UPSTREAM_TLS_UNSUPPORTED',
      `upstream ${where} does not support SSL, but sslmode=${target.sslmode} requires it`,
    );
  }
  const opts: ConnectionOptions = { socket: raw, rejectUnauthorized: target.sslmode !== 'require' };
  try {
    opts.secureContext = secureContextFor(target.caFile);
  } catch (err) {
    raw.destroy();
    throw err;
  }
  if (isIP(target.host) === 0) opts.servername = target.host;
  // verify-ca checks the chain only; verify-full also the host name (libpq-ssl.html, "SSL Mode Descriptions").
  if (target.sslmode === 'verify-ca' || target.sslmode === 'require') opts.checkServerIdentity = () => undefined;
  else opts.checkServerIdentity = (_host, cert) => checkServerIdentity(target.host, cert);
  const secure = await new Promise<Socket>((resolve, reject) => {
    const s = tlsConnect(opts);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UpstreamError('PGW_UPSTREAM_TIMEOUT', `timed out in the TLS handshake with upstream ${where}`));
    }, timeoutMs);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.off('error', onError);
      resolve(s);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      raw.destroy();
      reject(
        new UpstreamError(
          'PGW_UPSTREAM_TLS',
          `TLS with upstream ${where} failed (sslmode=${target.sslmode}): ${err.message}`,
          { cause: err },
        ),
      );
    };
    s.once('error', onError);
  });
  return { socket: secure, tls: true };
}

/**
 * Connects and authenticates (SCRAM-SHA-256, md5 or cleartext, whichever the server asks for) as `creds`, passing
 * `params` (already filtered) in the StartupMessage. Resolves at the first ReadyForQuery.
 */
export async function connectUpstream(
  target: UpstreamTarget,
  creds: Credentials,
  params: Record<string, string>,
): Promise<UpstreamSession> {
  const { socket, tls } = await openTransport(target);
  const reader = new MessageReader(socket, 'upstream');
  const timer = setTimeout(
    () => socket.destroy(new UpstreamError('PGW_UPSTREAM_TIMEOUT', 'timed out authenticating to upstream')),
    target.connectTimeoutMs ?? 10_000,
  );
  try {
    socket.write(startupMessage({ ...params, user: creds.username, database: target.database }));
    const cert = tls ? (socket as TLSSocket).getPeerCertificate().raw : undefined;
    const auth = await authenticate(socket, reader, creds, cert, target.channelBinding ?? 'prefer');
    const out: UpstreamSession = {
      socket,
      tls,
      auth,
      parameters: [],
      processId: 0,
      secretKey: 0,
      txStatus: 'I',
      leftover: Buffer.alloc(0),
    };
    for (;;) {
      const m = await reader.next();
      if (m.type === B.ParameterStatus) {
        const z1 = m.buf.indexOf(0, 5);
        const z2 = m.buf.indexOf(0, z1 + 1);
        out.parameters.push([m.buf.toString('utf8', 5, z1), m.buf.toString('utf8', z1 + 1, z2)]);
      } else if (m.type === B.BackendKeyData) {
        out.processId = m.buf.readInt32BE(5);
        out.secretKey = m.buf.readInt32BE(9);
      } else if (m.type === B.ReadyForQuery) {
        out.txStatus = String.fromCharCode(m.buf[5]) as 'I' | 'T' | 'E';
        break;
      } else if (m.type === B.ErrorResponse) {
        throw rejected(m.buf);
      }
      // NoticeResponse and NegotiateProtocolVersion during startup carry nothing the proxy needs.
    }
    out.leftover = reader.detach();
    return out;
  } catch (err) {
    reader.detach();
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * PostgreSQL's refusals of a startup setting the client chose (forwarded startup parameters): an unknown parameter
 * (42704), a bad value (22023), one that cannot be set now (55P02) or by this role (42501). The client gets them as
 * PostgreSQL words them, not as a connection failure (class 08), which clients and poolers retry.
 */
const CLIENT_SETTING_CODES = new Set(['42704', '22023', '55P02', '42501']);

function rejected(buf: Buffer): UpstreamError {
  const f = decodeErrorFields(buf, 0, buf.length);
  const code = f.get('C');
  if (code !== undefined && CLIENT_SETTING_CODES.has(code))
    return new UpstreamError('PGW_UPSTREAM_REJECTED', f.get('M') ?? 'invalid startup parameter', {
      upstreamCode: code,
      sqlstate: code,
    });
  return new UpstreamError(
    'PGW_UPSTREAM_REJECTED',
    `upstream rejected the connection: ${f.get('M') ?? 'unknown error'}`,
    {
      upstreamCode: f.get('C'),
    },
  );
}

/**
 * Answers whatever the server asks for, within `channelBinding` (libpq's rules): with `require` only a
 * SCRAM-SHA-256-PLUS exchange bound to `cert` (the server certificate, DER; undefined without TLS) may end in
 * AuthenticationOk. Any SCRAM exchange must end with the server's signature verified before AuthenticationOk counts:
 * a server (or a machine in the middle) that skips it has not proved it knows the password.
 */
async function authenticate(
  socket: Socket,
  reader: MessageReader,
  creds: Credentials,
  cert: Buffer | undefined,
  channelBinding: ChannelBindingMode,
): Promise<UpstreamAuth> {
  let scram: ScramClient | null = null;
  let auth: UpstreamAuth = 'trust';
  const refuseUnbound = (what: string) => {
    if (channelBinding === 'require')
      throw new UpstreamError(
        'PGW_UPSTREAM_AUTH_METHOD',
        `channel_binding=require, but upstream ${what}: only SCRAM-SHA-256-PLUS over TLS binds the login to the server`,
      );
  };
  for (;;) {
    const m = await reader.next();
    if (m.type === B.ErrorResponse) throw rejected(m.buf);
    if (m.type !== B.Authentication)
      throw new UpstreamError(
        'PGW_UPSTREAM_PROTOCOL',
        `unexpected message "${String.fromCharCode(m.type)}" during authentication`,
      );
    const code = m.buf.readInt32BE(5);
    switch (code) {
      case Auth.Ok:
        if (scram && !scram.verified)
          throw new UpstreamError(
            'PGW_UPSTREAM_SCRAM',
            'upstream accepted the login before proving it knows the password (SCRAM exchange not completed)',
          );
        // md5 and cleartext were refused when asked for; what is left unbound here is a login with no exchange.
        if (!scram) refuseUnbound('accepted the login without authentication');
        return auth;
      case Auth.CleartextPassword:
        auth = 'password';
        refuseUnbound('asks for a cleartext password');
        socket.write(passwordMessage(creds.password));
        break;
      case Auth.MD5Password:
        auth = 'md5';
        refuseUnbound('asks for an md5 password');
        socket.write(passwordMessage(md5Response(creds.username, creds.password, m.buf.subarray(9, 13))));
        break;
      case Auth.SASL: {
        if (scram) throw new UpstreamError('PGW_UPSTREAM_PROTOCOL', 'a second SASL exchange during authentication');
        const mechanisms = m.buf.toString('utf8', 9, m.buf.length).split('\0').filter(Boolean);
        scram = new ScramClient(undefined, scramBinding(mechanisms, cert, channelBinding));
        if (!mechanisms.includes(scram.mechanism)) {
          throw new UpstreamError(
            'PGW_UPSTREAM_AUTH_METHOD',
            `upstream offers no supported SASL mechanism (${mechanisms.join(', ')})`,
          );
        }
        auth = scram.mechanism;
        socket.write(saslInitialResponse(scram.mechanism, scram.first()));
        break;
      }
      case Auth.SASLContinue:
        if (!scram) throw new UpstreamError('PGW_UPSTREAM_PROTOCOL', 'SASLContinue without SASL');
        socket.write(saslResponse(await scram.final(m.buf.toString('utf8', 9), creds.password)));
        break;
      case Auth.SASLFinal:
        if (!scram) throw new UpstreamError('PGW_UPSTREAM_PROTOCOL', 'SASLFinal without SASL');
        scram.verify(m.buf.toString('utf8', 9));
        break;
      default:
        throw new UpstreamError(
          'PGW_UPSTREAM_AUTH_METHOD',
          `upstream asks for an unsupported authentication method (code ${code})`,
        );
    }
  }
}

/** Which GS2 channel-binding flag to send, as libpq chooses it (fe-auth-scram.c), refusing where `require` says. */
function scramBinding(mechanisms: string[], cert: Buffer | undefined, mode: ChannelBindingMode): ScramBinding {
  if (mode === 'disable' || cert === undefined) {
    if (mode === 'require')
      throw new UpstreamError(
        'PGW_UPSTREAM_AUTH_METHOD',
        'channel_binding=require needs TLS to the upstream (sslmode require, verify-ca or verify-full)',
      );
    return { flag: 'n' };
  }
  if (!mechanisms.includes('SCRAM-SHA-256-PLUS')) {
    if (mode === 'require')
      throw new UpstreamError(
        'PGW_UPSTREAM_AUTH_METHOD',
        `channel_binding=require, but upstream does not offer SCRAM-SHA-256-PLUS (${mechanisms.join(', ')})`,
      );
    return { flag: 'y' };
  }
  try {
    return { flag: 'p', data: tlsServerEndPoint(cert) };
  } catch (err) {
    if (mode === 'require')
      throw new UpstreamError('PGW_UPSTREAM_AUTH_METHOD', `channel_binding=require: ${(err as Error).message}`);
    // The server offered -PLUS, so `y` would read as a downgrade to it: say plainly that this client cannot bind.
    return { flag: 'n' };
  }
}
