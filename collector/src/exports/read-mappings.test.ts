import { newChain, sealEvent } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../event.js';
import { readEvent } from '../read-audit/read-event.js';
import { makeSession } from '../testing/audit-events.js';
import { toEcs } from './ecs-mapping.js';
import { toOcsf } from './ocsf-mapping.js';
import { formatSyslog } from './syslog-format.js';

describe('SIEM mappings of a read of the trail (audit.read)', () => {
  const chain = newChain();
  const at = { time: '2026-11-30T12:00:00.000001Z', session: 'collector-x', source: { instance: 'x' } };
  // The collector's view of an event: the fields it reads, the rest carried along.
  const served = sealEvent(
    readEvent(
      {
        reader: 'tess',
        route: '/api/v1/events',
        query: { session: 's1' },
        namespaces: ['team-a'],
        status: 200,
        items: 4,
      },
      at,
    ),
    chain,
  ) as unknown as AuditEvent;
  const refused = sealEvent(
    readEvent({ reader: 'unknown', route: '/api/v1/sessions', status: 401 }, at),
    chain,
  ) as unknown as AuditEvent;

  it('names the reader as the user, the route and the answer, and keeps the whole read', () => {
    expect(toEcs(served)).toMatchObject({
      event: { action: 'audit.read', category: ['web'], type: ['access'], outcome: 'success', sequence: 1 },
      user: { name: 'tess', roles: [] },
      url: { path: '/api/v1/events' },
      http: { response: { status_code: 200 } },
      pgwarden: { read: { namespaces: ['team-a'], items: 4, query: { session: 's1' } } },
    });
    expect(toOcsf(served)).toMatchObject({
      activity_id: 1,
      activity_name: 'Read',
      type_uid: 600501,
      status: 'Success',
      status_code: '200',
      actor: { user: { name: 'tess' }, session: { uid: 'collector-x' } },
      unmapped: { read: { route: '/api/v1/events', items: 4 } },
    });
    const line = formatSyslog(served);
    expect(line).toMatch(/ pgwarden - audit\.read \[pgwarden@32473 session="collector-x" seq="1" type="audit\.read"/);
    expect(JSON.parse(line.slice(line.indexOf('] ') + 2)).read.reader).toBe('tess');
  });

  it('maps a refused read as a failure with its status', () => {
    expect(toEcs(refused)).toMatchObject({
      event: { outcome: 'failure' },
      user: { name: 'unknown' },
      http: { response: { status_code: 401 } },
    });
    expect(toOcsf(refused)).toMatchObject({ status_id: 2, status: 'Failure', status_code: '401' });
  });
});

describe('SIEM mappings of a guarded statement', () => {
  it('carry what it changed in all (result.changed) next to its rows', () => {
    const [, statement] = makeSession({ id: 'guarded', statements: 1, changed: 6 });
    expect(toEcs(statement)).toMatchObject({ db: { rows: 1, rows_changed: 6 } });
    expect(toOcsf(statement)).toMatchObject({ unmapped: { rows: 1, rows_changed: 6 } });
  });
});
