import type { JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { connect, type NatsConnection, usernamePasswordAuthenticator } from '@nats-io/transport-node';
import type { NatsUserFiles } from '@pgwarden/policy';
import { redactUrl } from '../errors.js';

export interface CollectorNatsOptions {
  url: string;
  /** Connection name the server shows (`nats-server` monitoring, logs). */
  name: string;
  /** The collector's NATS user (files username/password of a mounted Secret), read at each connect. */
  userFiles?: NatsUserFiles;
  /** Keep trying while this is true (the owner's `running`). */
  running(): boolean;
  /** Status lines: connect failures (URL without credentials), then the client's own status events. */
  onStatus?(status: string): void;
  /** The connection is up (first connect and each reconnect) or down (each disconnect). */
  onUp?(up: boolean): void;
}

/**
 * Connects for a collector component (the audit consumer, the approval queue): retries every 500 ms while the
 * component runs, so a collector started before its NATS serves its API and connects when NATS comes; the client
 * then reconnects forever by itself. Returns null when the component stopped first (nothing is left open).
 */
export async function connectCollectorNats(opts: CollectorNatsOptions): Promise<NatsConnection | null> {
  let nc: NatsConnection | null = null;
  while (opts.running() && !nc) {
    try {
      nc = await connect({
        servers: opts.url,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        name: opts.name,
        ...(opts.userFiles
          ? { authenticator: usernamePasswordAuthenticator(opts.userFiles.user, opts.userFiles.pass) }
          : {}),
      });
    } catch (err) {
      opts.onStatus?.(`cannot connect to ${redactUrl(opts.url)}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  if (nc && !opts.running()) {
    // Stopped while the connection was being made: the owner had nothing to close yet.
    await nc.close();
    return null;
  }
  if (nc) {
    const live = nc;
    opts.onUp?.(true);
    void (async () => {
      for await (const s of live.status()) {
        if (s.type === 'disconnect') opts.onUp?.(false);
        if (s.type === 'reconnect') opts.onUp?.(true);
        opts.onStatus?.(s.type);
      }
    })();
  }
  return nc;
}

/**
 * Creates a stream when it does not exist. An existing one is left as it is, whoever created it (a sidecar, another
 * collector replica), and losing the race to create it is not an error, except that subjects it lacks are added
 * (an older release's stream, e.g. approvals under `pgwarden.approvals.>` before they moved to
 * `pgwarden.approval.>`, would otherwise leave every new publish without a stream).
 */
export async function addStreamIfMissing(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
): Promise<void> {
  try {
    const info = await jsm.streams.info(config.name);
    const have = info.config.subjects ?? [];
    const missing = (config.subjects ?? []).filter((s) => !have.includes(s));
    if (missing.length > 0) await jsm.streams.update(config.name, { subjects: [...have, ...missing] });
    return;
  } catch (err) {
    if ((err as Error).name !== 'StreamNotFoundError') throw err;
  }
  try {
    await jsm.streams.add(config);
  } catch (err) {
    if (!/already in use|exists/i.test((err as Error).message)) throw err;
  }
}

/**
 * Drains `nc` for at most `ms`, then closes it: a drain waits for the server, and one that is away (or
 * reconnecting) must not hold a collector's stop.
 */
export async function closeWithin(nc: NatsConnection, ms = 2000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    nc.drain().catch(() => {}),
    new Promise<void>((r) => {
      timer = setTimeout(r, ms);
    }),
  ]);
  clearTimeout(timer);
  if (!nc.isClosed()) await nc.close().catch(() => {});
}
