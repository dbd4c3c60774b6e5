import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ApprovalMetrics } from './approval-metrics.js';

describe('ApprovalMetrics', () => {
  it('tracks holds in flight and splits an unreachable queue from a person’s rejection', async () => {
    const m = new ApprovalMetrics();
    const a = new Registry();
    const b = new Registry();
    m.register(a);
    m.register(b); // one per listener: the same metric objects
    m.register(a); // idempotent
    const policy = { name: 'p', hash: 'h' };
    const held = { type: 'statement.held', session: 's', policy, timeoutMs: 1 } as const;
    const released = (outcome: 'approved' | 'rejected' | 'timeout' | 'unavailable', by?: string) =>
      ({ type: 'statement.released', session: 's', policy, outcome, heldMs: 1, by }) as const;
    for (const r of [
      released('approved', 'dana'),
      released('rejected', 'dana'),
      // An approver who happens to be called `pgwarden` is a person's rejection like any other.
      released('rejected', 'pgwarden'),
      released('unavailable'),
      released('timeout'),
    ]) {
      m.onEvent(held);
      m.onEvent(r);
    }
    m.onEvent(held);
    for (const reg of [a, b]) {
      const text = await reg.metrics();
      expect(text).toMatch(/^pgwarden_approvals_held 1$/m);
      for (const outcome of ['approved', 'rejected', 'unavailable', 'timeout'])
        expect(text).toMatch(
          new RegExp(`^pgwarden_approvals_total\\{outcome="${outcome}"\\} ${outcome === 'rejected' ? 2 : 1}$`, 'm'),
        );
    }
  });
});
