import type { Socket } from 'node:net';
import { negotiateProtocolVersion } from '../protocol/backend-messages.js';
import type { Identity, ProxyHooks, StartupInfo } from './hooks.js';
import { filterStartupParams } from './startup-params.js';

/** A client the proxy refuses at startup: FATAL with this SQLSTATE and message. */
export class StartupRefused extends Error {
  readonly sqlstate: string;
  constructor(sqlstate: string, message: string) {
    super(message);
    this.name = 'StartupRefused';
    this.sqlstate = sqlstate;
  }
}

export interface AuthenticatedClient {
  startup: StartupInfo;
  identity: Identity;
  client: { address: string; port: number };
  /** Startup parameters to pass upstream. */
  forward: Record<string, string>;
}

/**
 * From the StartupMessage to an authenticated identity: filters the parameters (identity/protocol changes are
 * refused), negotiates the protocol version down to 3.0 when asked for more, asks for a password when the hooks
 * need one, and calls `hooks.authenticate`. Throws StartupRefused for the client's FATAL.
 */
export async function authenticateClient(
  socket: Socket,
  hooks: ProxyHooks,
  packet: { params: Record<string, string>; minor: number },
  askPassword: () => Promise<string>,
): Promise<AuthenticatedClient> {
  const { params, minor } = packet;
  const decision = filterStartupParams(params);
  if (!decision.ok) {
    try {
      hooks.startupRefused?.({
        code: decision.code,
        message: decision.message,
        client: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
        user: params.user,
        database: params.database ?? params.user,
        applicationName: params.application_name,
      });
    } catch {
      // The refusal stands whatever the audit trail does with it.
    }
    throw new StartupRefused(decision.code, decision.message);
  }
  if (minor > 0 || decision.unrecognizedProtocolOptions.length > 0) {
    // Only 3.0 is spoken; PostgreSQL answers newer minor versions and unknown _pq_ options this way.
    socket.write(negotiateProtocolVersion(0, decision.unrecognizedProtocolOptions));
  }
  const startup: StartupInfo = {
    user: params.user,
    database: params.database ?? params.user,
    applicationName: params.application_name,
    params: decision.forward,
  };
  const client = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
  const password = hooks.needsPassword ? await askPassword() : undefined;
  const outcome = await hooks.authenticate({ startup, client, password });
  if (!outcome.ok) throw new StartupRefused(outcome.code, outcome.message);
  return { startup, identity: outcome.identity, client, forward: decision.forward };
}
