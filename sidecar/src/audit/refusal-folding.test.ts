import { type AuditEvent, auditEventSchema, verifyChain } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { createAuditRecorder, type LoginRefusal } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';

const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recorder(windowMs: number) {
  const events: AuditEvent[] = [];
  const sink: AuditSink = {
    ready: () => true,
    close: async () => {},
    emit: (e) => void events.push(JSON.parse(JSON.stringify(e))),
  };
  const rec = createAuditRecorder(sink, {
    instanceId: 'fold',
    refusalRepeatWindowMs: windowMs,
    checkpointIntervalMs: 600_000,
  });
  const refused = () => events.filter((e) => e.type === 'auth.refused');
  return { rec, events, refused };
}

const refusal = (address: string, port: number, user: string): LoginRefusal => ({
  reason: 'token_expired',
  code: '28P01',
  message: 'OIDC token has expired',
  client: { address, port },
  user,
  database: 'app',
});

describe('auth.refused folding (the recorder, unit)', () => {
  it('folds a client that varies the user it claims by address, reason and code once it passed 20 variants', async () => {
    const { rec, events, refused } = recorder(300);
    for (let i = 0; i < 30; i++) rec.authRefused(refusal('10.0.0.7', 40000 + i, `user-${i}`));
    // Another client is not affected by the first one's flood.
    rec.authRefused(refusal('10.0.0.8', 50000, 'user-0'));
    const now = refused();
    expect(now).toHaveLength(22);
    expect(now.slice(0, 20).every((e) => e.refusal?.varied === undefined)).toBe(true);
    expect(now[20].refusal).toMatchObject({ user: 'user-20', varied: true });
    expect(now[21].client).toMatchObject({ address: '10.0.0.8' });
    await sleep(450);
    // The window ends: the nine refusals after the 21st are one event; the exact folds had no repeats.
    const after = refused();
    expect(after).toHaveLength(23);
    expect(after[22]).toMatchObject({
      client: { address: '10.0.0.7', port: 40029 },
      refusal: { user: 'user-29', repeated: 9, varied: true },
    });
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    expect(verifyChain(events).ok).toBe(true);
    // Its folds over, the client starts with exact folds again.
    rec.authRefused(refusal('10.0.0.7', 41000, 'user-100'));
    expect(refused().at(-1)?.refusal).toMatchObject({ user: 'user-100' });
    expect(refused().at(-1)?.refusal?.varied).toBeUndefined();
    await rec.close();
  });

  it('writes out pending folds at close, so the last checkpoint covers them', async () => {
    const { rec, refused } = recorder(600_000);
    for (let i = 0; i < 4; i++) rec.authRefused(refusal('127.0.0.1', 30000 + i, 'agent'));
    expect(refused()).toHaveLength(1);
    await rec.close();
    expect(refused().map((e) => e.refusal?.repeated)).toEqual([undefined, 3]);
  });
});
