import { connectUpstream, type UpstreamSession } from '../upstream/connect.js';
import { runSetupSql } from '../upstream/setup-sql.js';
import type { AuthenticatedClient } from './client-auth.js';
import type { SessionHooks, SessionInfo } from './hooks.js';
import type { SessionContext } from './session-context.js';

/**
 * After the client authenticated: describes the session, opens its hooks (reported through `opened` before any
 * network wait, so a failing connect still closes them), connects upstream with the current credentials and runs
 * the hooks' setup SQL. Returns the upstream session and that SQL as it ran (a DISCARD ALL later undoes it, and it is
 * run again as it was at login, whatever a reloaded policy now says). Throws UpstreamError for the client's FATAL.
 */
export async function openUpstreamSession(
  ctx: SessionContext,
  id: string,
  auth: AuthenticatedClient,
  opened: (info: SessionInfo, hooks: SessionHooks) => void,
): Promise<{ up: UpstreamSession; setup: string[] }> {
  const creds = ctx.credentials();
  const target = ctx.upstream;
  const info: SessionInfo = {
    id,
    startedAt: new Date(),
    client: auth.client,
    startup: auth.startup,
    identity: auth.identity,
    upstream: {
      host: target.host,
      port: target.port,
      database: target.database,
      user: creds.username,
      tls: target.sslmode !== 'disable',
    },
  };
  const hooks = ctx.hooks.openSession(info);
  opened(info, hooks);
  const setup = hooks.setupSql();
  const up = await connectUpstream(target, creds, withOverrides(auth.forward, hooks.startupParams?.()));
  try {
    await runSetupSql(up, setup);
  } catch (err) {
    up.socket.destroy();
    throw err;
  }
  return { up, setup };
}

/** The client's forwarded parameters with the hooks' own in place of any of the same name (GUC names ignore case). */
function withOverrides(
  forward: Record<string, string>,
  own: Record<string, string> | undefined,
): Record<string, string> {
  if (own === undefined) return forward;
  const names = new Set(Object.keys(own).map((k) => k.toLowerCase()));
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(forward)) if (!names.has(k.toLowerCase())) out[k] = v;
  return { ...out, ...own };
}
