import { decodeErrorFields, decodeParameterStatus } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { queryMessage } from '../protocol/frontend-messages.js';
import type { UpstreamSession } from './connect.js';
import { UpstreamError } from './errors.js';
import { MessageReader } from './message-reader.js';

/**
 * Runs the session's setup statements (SET ROLE, statement_timeout, ...) on a fresh upstream session before the
 * client sees its first ReadyForQuery. ParameterStatus changes they cause (e.g. is_superuser after SET ROLE) are
 * merged into `session.parameters`, so the client is told the values it will actually run with.
 */
export async function runSetupSql(session: UpstreamSession, statements: string[]): Promise<void> {
  if (statements.length === 0) return;
  const reader = new MessageReader(session.socket, 'upstream');
  if (session.leftover.length > 0) reader.unshift(session.leftover);
  try {
    for (const sql of statements) {
      session.socket.write(queryMessage(sql));
      let failure: UpstreamError | null = null;
      for (;;) {
        const m = await reader.next();
        if (m.type === B.ErrorResponse && !failure) {
          const f = decodeErrorFields(m.buf, 0, m.buf.length);
          failure = new UpstreamError(
            'PGW_UPSTREAM_REJECTED',
            `session setup failed: ${f.get('M') ?? 'unknown error'}`,
            {
              upstreamCode: f.get('C'),
            },
          );
        } else if (m.type === B.ParameterStatus) {
          const [name, value] = decodeParameterStatus(m.buf, 0, m.buf.length);
          const i = session.parameters.findIndex(([n]) => n === name);
          if (i >= 0) session.parameters[i] = [name, value];
          else session.parameters.push([name, value]);
        } else if (m.type === B.ReadyForQuery) {
          session.txStatus = String.fromCharCode(m.buf[5]) as 'I' | 'T' | 'E';
          break;
        }
      }
      if (failure) throw failure;
    }
  } finally {
    session.leftover = reader.detach();
  }
}
