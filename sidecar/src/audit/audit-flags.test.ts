import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditVerifyKey, verifyChain, verifyCheckpoint } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { auditFromFlags, parseDrainTimeout, parseDuration, parseFsync, parseSize } from './audit-flags.js';
import { parseNatsServers } from './create-audit-sink.js';
import { recordPolicyEvent } from './governance-audit.js';
import { createFileSink } from './line-sinks.js';
import { selectRecord, sessionInfo } from './nats-test-kit.js';

const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audit-flags-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The JSON lines a file sink wrote. */
const eventsIn = (path: string) =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('audit flags', () => {
  it('parses sizes, durations and NATS server lists, and refuses nonsense with the flag named', () => {
    expect(parseSize('512MiB', 'x')).toBe(512 * 1024 ** 2);
    expect(parseSize('2g', 'x')).toBe(2 * 1024 ** 3);
    expect(parseSize('-1', 'x')).toBe(-1);
    expect(parseDuration('2m', 'x')).toBe(120_000);
    expect(parseDuration('30d', 'x')).toBe(30 * 86_400_000);
    expect(() => parseSize('lots', '--spool-max-bytes')).toThrow(/--spool-max-bytes/);
    expect(parseNatsServers('nats://a:4222,b:4223')).toEqual(['nats://a:4222', 'nats://b:4223']);
    expect(() => parseNatsServers('nats://')).toThrow(/at least one/);
    expect(() => auditFromFlags({ auditFailMode: 'maybe' })).toThrow(/closed or open/);
    expect(() => auditFromFlags({ audit: 'kafka://x' })).toThrow(/unsupported --audit sink/);
  });

  it('--audit-fsync: batch, batch:<interval>, always, never; an interval needs a unit and stays within 1ms–10s', () => {
    expect(parseFsync('batch')).toEqual({ fsync: 'batch' });
    expect(parseFsync('always')).toEqual({ fsync: 'always' });
    expect(parseFsync('never')).toEqual({ fsync: 'never' });
    expect(parseFsync('batch:50ms')).toEqual({ fsync: 'batch', intervalMs: 50 });
    expect(parseFsync('batch:1ms')).toEqual({ fsync: 'batch', intervalMs: 1 });
    expect(parseFsync('batch:2s')).toEqual({ fsync: 'batch', intervalMs: 2000 });
    for (const bad of ['batch:5', 'batch:0ms', 'batch:11s', 'batch:soon', 'batch:', 'sometimes', 'always:5ms']) {
      expect(() => parseFsync(bad), bad).toThrow(/--audit-fsync/);
    }
    expect(() => auditFromFlags({ auditFsync: 'batch:5' })).toThrow(/1ms to 10s/);
  });

  it('--audit-drain-timeout: a duration from 0s to 10m', () => {
    expect(parseDrainTimeout('15s')).toBe(15_000);
    expect(parseDrainTimeout('0s')).toBe(0);
    expect(parseDrainTimeout('10m')).toBe(600_000);
    for (const bad of ['11m', '-1s', 'soon', ''])
      expect(() => parseDrainTimeout(bad), bad).toThrow(/--audit-drain-timeout/);
    expect(() => auditFromFlags({ audit: 'nats://127.0.0.1:1', auditDrainTimeout: '1h' })).toThrow(/0s to 10m/);
  });

  it('file sink from flags: policy and session events as chained JSON lines; metrics exposed on another registry', async () => {
    const path = join(dir, 'audit.jsonl');
    // No heads tick within the test (exact event list below): audit-heads.test.ts covers them.
    const setup = auditFromFlags(
      { audit: `file:${path}`, auditFailMode: 'open' },
      { instanceId: 'f1', checkpointIntervalMs: 600_000 },
    );
    expect(setup.failMode).toBe('open');
    recordPolicyEvent(setup.recorder, { type: 'policy.loaded', names: ['p1'], hash: 'sha256:9' });
    recordPolicyEvent(setup.recorder, {
      type: 'policy.rejected',
      code: 'PGW_X',
      message: 'bad',
      kept: { names: ['p1'] },
    });
    const s = setup.recorder.openSession(sessionInfo('fs'));
    s.statement(selectRecord(1));
    s.end({});
    await setup.sink.whenIdle?.();
    await setup.sink.close();
    const events = eventsIn(path);
    expect(events.map((e) => e.type)).toEqual([
      'policy.loaded',
      'policy.rejected',
      'session.start',
      'statement',
      'session.end',
    ]);
    expect(verifyChain(events)).toMatchObject({ ok: true, sessions: 2 });
    const target = new Registry();
    setup.exposeMetrics(target);
    expect(await target.getSingleMetricAsString('pgwarden_audit_published_total')).toMatch(/sink="file"} 5/);
  });

  it('--audit-signing-key signs the chains of the file trail; --audit-checkpoint-interval stays within 10ms–1h', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const keyFile = join(dir, 'signing.key');
    writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    const trusted = auditVerifyKey(publicKey.export({ format: 'pem', type: 'spki' }).toString());
    const path = join(dir, 'signed.jsonl');
    const setup = auditFromFlags(
      { audit: `file:${path}`, auditSigningKey: keyFile, auditCheckpointInterval: '250ms' },
      { instanceId: 'signed' },
    );
    expect([setup.signingKeyId, setup.checkpointIntervalMs]).toEqual([trusted.keyId, 250]);
    const s = setup.recorder.openSession(sessionInfo('signed-session'));
    s.statement(selectRecord(1));
    s.end({});
    await setup.recorder.close();
    const events = eventsIn(path);
    // At close: the session's heads in the sidecar's own chain, signed by that chain's checkpoint.
    expect(events.map((e) => e.type)).toEqual([
      'session.start',
      'statement',
      'session.end',
      'audit.checkpoint',
      'audit.heads',
      'audit.checkpoint',
    ]);
    expect(events[4].heads?.chains).toEqual([{ id: 'signed-session', seq: 4, hash: events[3].hash }]);
    for (const c of [events[3], events[5]])
      expect(verifyCheckpoint(c, (id) => (id === trusted.keyId ? trusted.key : undefined)).ok).toBe(true);
    expect(readFileSync(path, 'utf8')).not.toContain(
      privateKey.export({ format: 'pem', type: 'pkcs8' }).toString().split('\n')[1],
    );

    expect(auditFromFlags({ audit: 'stdout' })).toMatchObject({ checkpointIntervalMs: 1000 });
    expect(auditFromFlags({ audit: 'stdout' }).signingKeyId).toBeUndefined();
    for (const bad of ['5ms', '2h', 'often'])
      expect(() => auditFromFlags({ auditCheckpointInterval: bad }), bad).toThrow(/--audit-checkpoint-interval/);
    // --audit-heads-refresh: 1s–1h, refused before any sink exists.
    const refused = join(dir, 'refused-heads.jsonl');
    for (const bad of ['500ms', '2h', 'sometimes'])
      expect(() => auditFromFlags({ audit: `file:${refused}`, auditHeadsRefresh: bad }), bad).toThrow(
        /--audit-heads-refresh/,
      );
    expect(existsSync(refused)).toBe(false);
    // A bad key refuses before any sink exists: no trail file is created.
    const unopened = join(dir, 'never.jsonl');
    expect(() => auditFromFlags({ audit: `file:${unopened}`, auditSigningKey: join(dir, 'nope.key') })).toThrow(
      `--audit-signing-key ${join(dir, 'nope.key')}: cannot read it (ENOENT)`,
    );
    expect(() => readFileSync(unopened)).toThrow(/ENOENT/);
  });

  it('file sink on a device that refuses writes is not ready and counts drops', async () => {
    const registry = new Registry();
    const sink = createFileSink({ path: '/dev/full', fsync: 'never', registry });
    sink.emit({ session: { id: 's', seq: 1 } });
    sink.emit({ session: { id: 's', seq: 2 } });
    // Lines are written at the end of the event-loop turn (one write for both), so the failure shows after it.
    expect(sink.stats?.()).toMatchObject({ queued: 2, dropped: 0 });
    await sink.whenIdle?.();
    expect(sink.ready()).toBe(false);
    expect(sink.stats?.()).toMatchObject({ dropped: 2, published: 0 });
    expect(await registry.getSingleMetricAsString('pgwarden_audit_dropped_total')).toMatch(/cause="file_io"} 2/);
    await sink.close();
  });
});

describe('governance events → audit', () => {
  it('a held statement becomes approval.requested then granted/denied/expired in its session chain', async () => {
    const path = join(dir, 'approvals.jsonl');
    const setup = auditFromFlags({ audit: `file:${path}` }, { instanceId: 'ap', checkpointIntervalMs: 600_000 });
    const s = setup.recorder.openSession(sessionInfo('held'));
    // `stale`: approved under a policy reloaded during the hold, so the sidecar denied it.
    for (const outcome of ['approved', 'rejected', 'timeout', 'stale'] as const) {
      recordPolicyEvent(setup.recorder, { type: 'statement.held', session: 'held', rule: 'writes', timeoutMs: 60_000 });
      recordPolicyEvent(setup.recorder, {
        type: 'statement.released',
        session: 'held',
        rule: 'writes',
        outcome,
        heldMs: 5,
      });
    }
    recordPolicyEvent(setup.recorder, { type: 'statement.held', session: 'unknown-session', timeoutMs: 1 });
    s.end({});
    await setup.sink.close();
    const events = eventsIn(path);
    expect(events.map((e) => e.type)).toEqual([
      'session.start',
      'approval.requested',
      'approval.granted',
      'approval.requested',
      'approval.denied',
      'approval.requested',
      'approval.expired',
      'approval.requested',
      'approval.denied',
      'session.end',
    ]);
    expect(events[1].approval.id).toBe(events[2].approval.id);
    expect(events[3].approval.id).not.toBe(events[1].approval.id);
    expect(events[1].approval).toMatchObject({ reason: 'rule writes', expiresAt: expect.stringMatching(/Z$/) });
    expect(verifyChain(events)).toMatchObject({ ok: true, sessions: 1 });
  });

  it('carries the approval queue’s id, the approver and their reason into the chain', async () => {
    const path = join(dir, 'approvals-queue.jsonl');
    const setup = auditFromFlags({ audit: `file:${path}` }, { instanceId: 'aq', checkpointIntervalMs: 600_000 });
    const s = setup.recorder.openSession(sessionInfo('queued'));
    const approvalId = '6f1c2e3a-1b2c-4d5e-8f90-123456789abc';
    recordPolicyEvent(setup.recorder, {
      type: 'statement.held',
      session: 'queued',
      rule: 'w',
      timeoutMs: 1000,
      approvalId,
    });
    recordPolicyEvent(setup.recorder, {
      type: 'statement.released',
      session: 'queued',
      rule: 'w',
      outcome: 'rejected',
      heldMs: 5,
      approvalId,
      by: 'carol',
      reason: 'not on a Friday',
    });
    s.end({});
    await setup.sink.close();
    const events = eventsIn(path);
    expect(events.map((e) => [e.type, e.approval])).toEqual([
      ['session.start', undefined],
      ['approval.requested', { id: approvalId, reason: 'rule w', expiresAt: expect.stringMatching(/Z$/) }],
      ['approval.denied', { id: approvalId, approver: 'carol', reason: 'not on a Friday' }],
      ['session.end', undefined],
    ]);
    expect(verifyChain(events)).toMatchObject({ ok: true, sessions: 1 });
  });
});
