import { randomInt } from 'node:crypto';

/**
 * The proxy's own BackendKeyData. Each client gets a random process id and secret from the proxy, never the
 * upstream's: a CancelRequest carrying them is mapped here to the session, which cancels its upstream backend with
 * the upstream key (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS).
 */
export class CancelRegistry {
  private readonly byPid = new Map<number, { secret: number; cancel: () => Promise<void> | void }>();

  /**
   * Allocates a key for a session; `cancel` runs when a matching CancelRequest arrives, and settles once the cancel
   * has been passed on (for an upstream cancel: once the server closed the cancel connection).
   */
  register(cancel: () => Promise<void> | void): { processId: number; secretKey: number } {
    let processId: number;
    do processId = randomInt(1, 0x7fffffff);
    while (this.byPid.has(processId));
    const secretKey = randomInt(-0x80000000, 0x7fffffff);
    this.byPid.set(processId, { secret: secretKey, cancel });
    return { processId, secretKey };
  }

  unregister(processId: number): void {
    this.byPid.delete(processId);
  }

  /**
   * Resolves to whether the key matched a live session (the client is told nothing either way, like PostgreSQL): at
   * once when it did not, else once the session's cancel has been passed on. Never rejects.
   */
  async cancel(processId: number, secretKey: number): Promise<boolean> {
    const entry = this.byPid.get(processId);
    if (entry === undefined || entry.secret !== secretKey) return false;
    try {
      await entry.cancel();
    } catch {
      // The session reports its own upstream errors; the cancel was attempted.
    }
    return true;
  }
}
