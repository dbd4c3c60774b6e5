import { generateKeyPairSync } from 'node:crypto';
import { auditSigner } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../event.js';
import { makeHeads, makeSession } from '../testing/audit-events.js';
import { toEcs } from './ecs-mapping.js';
import { toOcsf } from './ocsf-mapping.js';
import { formatSyslog } from './syslog-format.js';

describe('SIEM mappings of a signed checkpoint (audit.checkpoint)', () => {
  const signer = auditSigner(
    String(generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' })),
  );
  // The collector's view of an event: the fields it reads, the rest carried along.
  const events = makeSession({ id: 'siem-1', statements: 1, signer }) as unknown as AuditEvent[];
  const checkpoint = events[events.length - 1];

  it('maps it as a plain, successful informational record that keeps the signed position', () => {
    expect(checkpoint.type).toBe('audit.checkpoint');
    expect(toOcsf(checkpoint)).toMatchObject({
      class_uid: 6005,
      activity_id: 99,
      activity_name: 'audit.checkpoint',
      type_uid: 600599,
      severity_id: 1,
      status_id: 1,
      metadata: { uid: 'siem-1.4', correlation_uid: 'siem-1', sequence: 4 },
      unmapped: { checkpoint: { seq: 3, hash: events[2].hash, key: signer.keyId, sig: expect.any(String) } },
    });
    expect(toOcsf(checkpoint)).not.toHaveProperty('disposition_id');
    expect(toEcs(checkpoint)).toMatchObject({
      event: { action: 'audit.checkpoint', type: ['info'], category: ['database'], sequence: 4 },
      pgwarden: { checkpoint: { seq: 3, key: signer.keyId } },
    });
    // Informational severity (6), the type as MSGID, the event (with its checkpoint) as the message.
    const line = formatSyslog(checkpoint);
    expect(line).toMatch(
      /^<110>1 \S+ - pgwarden - audit\.checkpoint \[pgwarden@32473 session="siem-1" seq="4" type="audit\.checkpoint"/,
    );
    expect(JSON.parse(line.slice(line.indexOf('] ') + 2)).checkpoint.key).toBe(signer.keyId);
    // The other events' mappings are unchanged by it.
    expect(toEcs(events[1]).event).toMatchObject({ type: ['access'] });
    expect(JSON.parse(JSON.stringify(toOcsf(events[1]))).unmapped).not.toHaveProperty('checkpoint');
  });
});

describe('SIEM mappings of chain heads (audit.heads)', () => {
  const session = makeSession({ id: 'siem-h', statements: 1 });
  const [heads] = makeHeads('test-sidecar', [[session]]) as unknown as AuditEvent[];

  it('maps them as informational records that keep the heads, so a SIEM copy can be checked for cut tails', () => {
    const named = { chains: [{ id: 'siem-h', seq: 3, hash: session[2].hash }] };
    expect(toOcsf(heads)).toMatchObject({
      activity_name: 'audit.heads',
      severity_id: 1,
      status_id: 1,
      metadata: { uid: 'sidecar-test-sidecar.1', correlation_uid: 'sidecar-test-sidecar' },
      unmapped: { heads: named },
    });
    expect(toEcs(heads)).toMatchObject({
      event: { action: 'audit.heads', type: ['info'] },
      pgwarden: { heads: named },
    });
    expect(JSON.parse(JSON.stringify(toEcs(session[1] as unknown as AuditEvent))).pgwarden).not.toHaveProperty('heads');
  });
});

describe('SIEM mappings of chain findings (audit.finding)', () => {
  const finding = (kind: 'audit.gap' | 'audit.tampered') =>
    ({
      v: 1,
      type: 'audit.finding',
      id: 'collector-c1.7',
      time: '2026-11-30T23:00:00.000000Z',
      session: { id: 'collector-c1', seq: 7 },
      identity: { groups: [] },
      finding: { kind, session: 's-9', seqFrom: 4, seqTo: 6, detail: 'events 4..6 are missing' },
      prevHash: null,
      hash: '0'.repeat(64),
    }) as unknown as AuditEvent;

  it('maps a finding as an alert: high severity for missing events, critical for altered ones', () => {
    expect(toOcsf(finding('audit.gap'))).toMatchObject({
      activity_name: 'audit.finding',
      severity_id: 4,
      status_id: 2,
      status_code: 'audit.gap',
      status_detail: 'session s-9: events 4..6 are missing',
      unmapped: { finding: { session: 's-9', seqFrom: 4 } },
    });
    expect(toOcsf(finding('audit.tampered'))).toMatchObject({ severity_id: 5 });
    expect(toEcs(finding('audit.tampered'))).toMatchObject({
      event: { kind: 'alert', severity: 99, outcome: 'failure', reason: 'events 4..6 are missing' },
      pgwarden: { finding: { kind: 'audit.tampered' } },
    });
    expect(toEcs(finding('audit.gap'))).toMatchObject({ event: { kind: 'alert', severity: 73 } });
    // Syslog PRI: facility 13 (log audit) × 8 + 3 error (missing) / 2 critical (altered).
    expect(formatSyslog(finding('audit.gap'))).toMatch(/^<107>1 /);
    expect(formatSyslog(finding('audit.tampered'))).toMatch(/^<106>1 /);
    // An ordinary event is no alert.
    expect(toEcs(makeSession({ id: 'plain', statements: 1 })[1] as unknown as AuditEvent)).toMatchObject({
      event: { kind: 'event' },
    });
  });
});
