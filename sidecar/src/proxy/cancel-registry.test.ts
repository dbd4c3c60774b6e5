import { describe, expect, it } from 'vitest';
import { CancelRegistry } from './cancel-registry.js';

describe('CancelRegistry', () => {
  it('cancels only with the exact process id and secret, and nothing once the session is gone', async () => {
    const r = new CancelRegistry();
    let cancelled = 0;
    const key = r.register(() => cancelled++);
    const other = r.register(() => {
      throw new Error('the other session must not be cancelled');
    });
    expect(other.processId).not.toBe(key.processId);
    expect(await r.cancel(key.processId, key.secretKey ^ 1)).toBe(false);
    expect(
      await r.cancel(key.processId + 1 === other.processId ? key.processId - 1 : key.processId + 1, key.secretKey),
    ).toBe(false);
    expect(cancelled).toBe(0);
    expect(await r.cancel(key.processId, key.secretKey)).toBe(true);
    expect(cancelled).toBe(1);
    r.unregister(key.processId);
    expect(await r.cancel(key.processId, key.secretKey)).toBe(false);
    expect(cancelled).toBe(1);
  });
});
