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
