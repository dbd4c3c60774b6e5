import { isLoopbackHost } from '@pgwarden/policy';
import { CollectorError } from '../errors.js';
import type { OidcBearer } from './oidc-bearer.js';
import type { TokenFile, TokenHolder } from './token-file.js';

/**
 * Who may read the audit trail over HTTP (sessions, events, the live stream, verification): statement text and
 * result samples in it can hold personal data, so reading is a privilege like deciding.
 *
 * - With a readers file, a reader's or an approver's bearer token is required.
 * - Without one the read routes are open, which the collector allows only where nobody else can connect: an API on
 *   a loopback address, or an operator who said so (`--insecure-open-api`). Anything else fails at start-up.
 * - With an OIDC issuer (`--oidc-issuer`), a JWT whose holder a readers or approvers entry binds (`oidc`) reads as
 *   that entry (http/read-routes.ts); this module knows the static tokens only.
 */
export interface ReadAccess {
  /** `open`: no token needed; `tokens`: a reader's or approver's token. */
  mode: 'open' | 'tokens';
  readers?: TokenFile;
  approvers?: TokenFile;
  oidc?: OidcBearer;
}

/** Open (no token needed) ⇒ `anonymous`; else the reader, or undefined for a missing or unknown token. */
export function authenticateReader(
  access: ReadAccess,
  authorization: string | undefined,
): TokenHolder | 'anonymous' | undefined {
  if (access.mode === 'open') return 'anonymous';
  // A broken readers file refuses readers (its authenticate throws), but an approver may still read.
  let reader: TokenHolder | undefined;
  let broken: unknown;
  try {
    reader = access.readers?.authenticate(authorization);
  } catch (err) {
    broken = err;
  }
  if (reader) return reader;
  let approver: TokenHolder | undefined;
  try {
    approver = access.approvers?.authenticate(authorization);
  } catch {
    // An invalid approvers file refuses its approvers; the readers file's own state decides the answer below.
  }
  if (approver) return approver;
  if (broken) throw broken;
  return undefined;
}

/** Decides the read access at start-up; throws COLLECTOR_BAD_CONFIG for an open API on a network address. */
export function readAccessFor(opts: {
  host: string | undefined;
  readers?: TokenFile;
  approvers?: TokenFile;
  insecureOpen?: boolean;
  oidc?: OidcBearer;
}): ReadAccess {
  if (opts.readers)
    return {
      mode: 'tokens',
      readers: opts.readers,
      approvers: opts.approvers,
      ...(opts.oidc ? { oidc: opts.oidc } : {}),
    };
  if (opts.insecureOpen || isLoopbackHost(opts.host)) return { mode: 'open' };
  throw new CollectorError(
    'COLLECTOR_BAD_CONFIG',
    `the audit API on ${opts.host} would let anyone who reaches it read the audit trail: give --readers-file ` +
      '(who may read; docs/collector.md, "Who may read"), listen on 127.0.0.1, or accept it with --insecure-open-api',
  );
}
