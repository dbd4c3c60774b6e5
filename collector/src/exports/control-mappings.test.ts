import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../event.js';
import { makeControlApplied } from '../testing/audit-events.js';
import { toEcs } from './ecs-mapping.js';
import { toOcsf } from './ocsf-mapping.js';
import { formatSyslog } from './syslog-format.js';

describe('SIEM mappings of an applied control action (control.applied)', () => {
  const common = { id: '3f2c8a4e-1b7d-4c9e-8f0a-5d6b7c8e9f01', by: 'alice', at: '2026-11-30T13:59:59.000Z' };
  const [terminate, suspend, resume] = makeControlApplied('sc-1', [
    {
      ...common,
      kind: 'terminate',
      reason: 'runaway loop, ticket OPS-9',
      session: '9b1d6c2e-4f3a-4e5b-8c7d-0e1f2a3b4c5d',
      signed: true,
      sessionsEnded: 1,
    },
    {
      ...common,
      kind: 'suspend',
      reason: 'incident 42',
      policy: { namespace: 'agents', name: 'analytics-agent' },
      signed: false,
      sessionsEnded: 3,
    },
    {
      ...common,
      kind: 'resume',
      reason: 'incident 42 closed',
      policy: { namespace: 'agents', name: 'analytics-agent' },
      signed: false,
      sessionsEnded: 0,
    },
  ]) as unknown as AuditEvent[];

  it('ECS: the approver is the user; a terminate ends a session, a suspend or resume changes configuration', () => {
    expect(toEcs(terminate)).toMatchObject({
      event: {
        kind: 'event',
        category: ['session'],
        type: ['end'],
        action: 'control-terminate',
        outcome: 'success',
        reason: 'runaway loop, ticket OPS-9',
      },
      user: { name: 'alice' },
      labels: { session_id: 'sidecar-sc-1', namespace: 'agents' },
      pgwarden: { control: { kind: 'terminate', session: '9b1d6c2e-4f3a-4e5b-8c7d-0e1f2a3b4c5d', sessionsEnded: 1 } },
    });
    expect(toEcs(suspend)).toMatchObject({
      event: { category: ['configuration'], type: ['change'], action: 'control-suspend', reason: 'incident 42' },
      pgwarden: { control: { policy: { namespace: 'agents', name: 'analytics-agent' }, sessionsEnded: 3 } },
    });
    expect(toEcs(resume).event).toMatchObject({ action: 'control-resume', type: ['change'] });
  });

  it('OCSF: activity 99 Other named control.applied, the approver as actor, medium severity unless a resume', () => {
    expect(toOcsf(terminate)).toMatchObject({
      activity_id: 99,
      activity_name: 'control.applied',
      type_uid: 600599,
      severity_id: 3,
      status: 'Success',
      message: 'terminate by alice: runaway loop, ticket OPS-9',
      actor: { user: { name: 'alice' }, session: { uid: 'sidecar-sc-1' } },
      unmapped: { control: { kind: 'terminate', signed: true } },
    });
    expect(toOcsf(suspend)).toMatchObject({ severity_id: 3, message: 'suspend by alice: incident 42' });
    expect(toOcsf(resume)).toMatchObject({ severity_id: 1, status_id: 1 });
  });

  it('syslog: notice, with the event type as MSGID', () => {
    const line = formatSyslog(suspend);
    expect(line).toMatch(/^<109>1 \S+ - pgwarden - control\.applied \[pgwarden@32473 session="sidecar-sc-1" seq="2"/);
    expect(JSON.parse(line.slice(line.indexOf('] ') + 2)).control.kind).toBe('suspend');
  });
});
