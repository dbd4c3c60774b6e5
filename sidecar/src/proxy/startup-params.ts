/**
 * Decides which StartupMessage parameters reach the upstream. Every parameter other than `user`, `database`,
 * `options` and `replication` is applied by PostgreSQL as a run-time setting for the session
 * (https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE),
 * so a client could name any GUC there — including `role` or `session_authorization`, which change identity.
 * The proxy therefore refuses what changes identity or protocol and forwards the rest.
 */

export type StartupDecision =
  | { ok: true; forward: Record<string, string>; unrecognizedProtocolOptions: string[] }
  | { ok: false; code: string; message: string };

/** Settings that change who the session is or what it may do; refused whatever their value. */
const IDENTITY_SETTINGS = new Set(['role', 'session_authorization', 'is_superuser', 'session_replication_role']);

/** Settings the proxy sets itself (user and database come from its own configuration). */
const PROXY_OWNED = new Set(['user', 'database']);

const FALSE_VALUES = new Set(['', '0', 'false', 'off', 'no']);

export function filterStartupParams(params: Record<string, string>): StartupDecision {
  const forward: Record<string, string> = {};
  const unrecognizedProtocolOptions: string[] = [];
  for (const [rawName, value] of Object.entries(params)) {
    const name = rawName.toLowerCase();
    if (PROXY_OWNED.has(name)) continue;
    if (name === 'replication') {
      // replication=true|database starts a walsender, which speaks the replication protocol, not SQL.
      if (FALSE_VALUES.has(value.toLowerCase())) continue;
      return refuse(`replication connections are not allowed through pgwarden (replication=${value})`);
    }
    if (name === 'options') {
      // `options` carries command-line switches (-c name=value, --name=value) applied with the session's
      // privileges: a way around every other check here, so any non-blank value is refused.
      if (value.trim() === '') continue;
      return refuse(
        'startup parameter "options" is not allowed through pgwarden: set parameters with SET after connecting',
      );
    }
    if (name.startsWith('_pq_.')) {
      // Protocol extensions: reported back as unrecognised in NegotiateProtocolVersion, never forwarded.
      unrecognizedProtocolOptions.push(rawName);
      continue;
    }
    if (IDENTITY_SETTINGS.has(name)) {
      return refuse(`startup parameter "${rawName}" changes the session identity and is not allowed through pgwarden`);
    }
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(rawName)) {
      return refuse(`invalid startup parameter name "${rawName.slice(0, 64)}"`);
    }
    forward[rawName] = value;
  }
  return { ok: true, forward, unrecognizedProtocolOptions };
}

function refuse(message: string): StartupDecision {
  // 08P01 protocol_violation, as PostgreSQL uses for invalid startup packets; identity changes get 28000.
  return { ok: false, code: message.includes('identity') ? '28000' : '08P01', message };
}
