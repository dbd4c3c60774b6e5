import { readFileSync } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  connect,
  credsAuthenticator,
  type NatsConnection,
  usernamePasswordAuthenticator,
} from '@nats-io/transport-node';
import type { NatsUserFiles } from '@pgwarden/policy';
import { type AuditStreamLimits, ensureAuditStream } from './audit-stream.js';

export interface NatsLinkOptions {
  servers: string[];
  limits: AuditStreamLimits;
  requestTimeoutMs: number;
  /** NATS credentials file (JWT + nkey seed), read at each connect so a rotated Secret applies. */
  credsFile?: string;
  /** NATS user and password files (`--audit-nats-credentials-dir`), read at each connect. */
  userFiles?: NatsUserFiles;
  /** TLS to NATS: CA bundle to verify the server, optional client certificate. `{}` = system CAs. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** The connection is usable and the audit stream exists. Called again after each reconnect. */
  up(nc: NatsConnection): void;
  /** The connection dropped (the client keeps reconnecting by itself). */
  down(): void;
  log: (level: 'info' | 'warn' | 'error', msg: string, err?: unknown) => void;
}

/**
 * Keeps one NATS connection alive for the audit sink: connects with backoff (also when NATS is down at start),
 * lets the client reconnect forever, and reports up (after making sure the stream exists) and down.
 * Pings every 10 s so a silent network partition is noticed within ~30 s, not the client default of minutes.
 */
export class NatsLink {
  private closing = false;
  private nc?: NatsConnection;
  private readonly loop: Promise<void>;
  private wake?: () => void;
  private checking = false;

  constructor(private readonly opts: NatsLinkOptions) {
    this.loop = this.run();
  }

  /**
   * After publish failures on a live connection: check the stream again (it may have been deleted, or JetStream
   * restarted) and report up once it is there.
   */
  recheck(): void {
    const nc = this.nc;
    if (nc && !nc.isClosed() && !this.checking) void this.ready(nc);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.wake?.();
    await this.nc?.close().catch(() => {});
    await this.loop;
  }

  private async run(): Promise<void> {
    let delay = 250;
    while (!this.closing) {
      try {
        const nc = await connect({
          servers: this.opts.servers,
          name: 'pgwarden-sidecar',
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          timeout: 2000,
          pingInterval: 10_000,
          maxPingOut: 3,
          ...(this.opts.credsFile
            ? { authenticator: credsAuthenticator(() => readFileSync(this.opts.credsFile!)) }
            : this.opts.userFiles
              ? { authenticator: usernamePasswordAuthenticator(this.opts.userFiles.user, this.opts.userFiles.pass) }
              : {}),
          ...(this.opts.tls ? { tls: this.opts.tls } : {}),
        });
        if (this.closing) {
          await nc.close();
          return;
        }
        this.nc = nc;
        delay = 250;
        void this.watch(nc);
        await this.ready(nc);
        await nc.closed();
        this.opts.down();
      } catch (err) {
        this.opts.log('warn', 'audit NATS connection failed', err);
        await this.sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /** A backoff pause that close() cuts short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') this.opts.down();
      else if (s.type === 'reconnect') void this.ready(nc);
    }
  }

  /** Ensures the stream (JetStream may need a moment after a server restart), then reports up. */
  private async ready(nc: NatsConnection): Promise<void> {
    this.checking = true;
    try {
      let delay = 250;
      while (!this.closing && !nc.isClosed()) {
        try {
          const jsm = await jetstreamManager(nc, { timeout: this.opts.requestTimeoutMs });
          await ensureAuditStream(jsm, this.opts.limits);
          this.opts.log('info', 'audit NATS connected');
          this.opts.up(nc);
          return;
        } catch (err) {
          this.opts.log('warn', 'audit stream not available yet', err);
          await this.sleep(delay);
          delay = Math.min(delay * 2, 5000);
        }
      }
    } finally {
      this.checking = false;
    }
  }
}
