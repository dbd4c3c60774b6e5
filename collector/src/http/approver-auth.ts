import type { IncomingMessage } from 'node:http';
import type { TokenFile, TokenHolder } from '../auth/token-file.js';
import { CollectorError } from '../errors.js';
import { HttpError } from './json-io.js';
import type { ReaderNote } from './read-routes.js';

/**
 * The approver whose bearer token `req` carries, told to `note` for the request's `audit.read` event. 501 without
 * an approvers file (nobody can authenticate), 401 for a missing or unknown token, 503 while the file on disk is
 * invalid (every token is refused until it is fixed).
 */
export function requireApprover(approvers: TokenFile | undefined, req: IncomingMessage, note: ReaderNote): TokenHolder {
  if (!approvers)
    throw new HttpError(501, 'no_approvers', 'no approvers configured: start the collector with --approvers-file');
  let who: TokenHolder | undefined;
  try {
    who = approvers.authenticate(req.headers.authorization);
  } catch (err) {
    if (err instanceof CollectorError) throw new HttpError(503, 'approvers_unavailable', err.message);
    throw err;
  }
  if (!who) throw new HttpError(401, 'unauthorized', 'missing or unknown approver bearer token');
  note.reader = who.name;
  if (who.namespaces) note.namespaces = who.namespaces;
  return who;
}
