import { type AuditEvent as SealedEvent, verifyChain } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../event.js';
import { ReadRecorder } from '../read-audit/read-recorder.js';
import { toEcs } from './ecs-mapping.js';
import { toOcsf } from './ocsf-mapping.js';

describe('SIEM mappings of a web sign-in that ended (web.session.end)', () => {
  it('the collector seals it into its own chain; ECS and OCSF name whose sign-in ended and why', async () => {
    const stored: SealedEvent[] = [];
    const r = new ReadRecorder({
      store: async (json) => {
        stored.push(JSON.parse(json) as SealedEvent);
        return 'stored';
      },
    });
    const end = {
      reader: 'dora',
      oidc: { issuer: 'https://idp.example', subject: 'u-dora' },
      reason: 'refresh_refused' as const,
      detail: 'the identity provider refused to renew the sign-in (invalid_grant)',
    };
    r.webSessionEnded(end);
    await r.record({ reader: 'dora', route: '/api/v1/approvals', status: 200 });
    r.close();
    expect(stored.map((e) => e.type)).toEqual(['web.session.end', 'audit.read']);
    expect(stored[0]).toMatchObject({ session: { id: r.sessionId, seq: 1 }, webSession: end });
    expect(verifyChain(stored).ok).toBe(true);
    const e = stored[0] as unknown as AuditEvent;
    expect(toEcs(e)).toMatchObject({
      event: {
        category: ['session'],
        type: ['end'],
        action: 'web.session.end',
        outcome: 'success',
        reason: end.detail,
      },
      user: { name: 'dora' },
    });
    expect(toOcsf(e)).toMatchObject({
      activity_id: 99,
      activity_name: 'web.session.end',
      status_code: 'refresh_refused',
      status_detail: end.detail,
      actor: { user: { name: 'dora' } },
    });
  });
});
