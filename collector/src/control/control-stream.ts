import { EventEmitter } from 'node:events';
import {
  DiscardPolicy,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  CONTROL_STREAM,
  CONTROL_SUBJECTS,
  type ControlMessage,
  controlSubject,
  type NatsUserFiles,
} from '@pgwarden/policy';
import { CollectorError } from '../errors.js';
import { addStreamIfMissing, closeWithin, connectCollectorNats } from '../ingest/nats-connect.js';

/**
 * What the contract (policy/src/control/control-messages.ts) needs of the stream: a subject's last message is its
 * state, kept until a newer one replaces it, and sidecars read it back with a direct get.
 */
const REQUIRED = {
  max_msgs_per_subject: 1,
  max_age: 0,
  allow_direct: true,
  discard: DiscardPolicy.Old,
} satisfies Partial<StreamConfig>;

/**
 * Creates PGWARDEN_CONTROL (file storage) if missing, and brings an existing one to REQUIRED. Its storage is left
 * as it is: JetStream cannot change a stream's storage type in place.
 */
export async function ensureControlStream(jsm: JetStreamManager): Promise<void> {
  await addStreamIfMissing(jsm, {
    name: CONTROL_STREAM,
    subjects: [CONTROL_SUBJECTS],
    storage: StorageType.File,
    max_bytes: -1,
    ...REQUIRED,
  });
  const { config } = await jsm.streams.info(CONTROL_STREAM);
  const have = config as unknown as Record<string, unknown>;
  if (Object.entries(REQUIRED).some(([k, v]) => have[k] !== v)) await jsm.streams.update(CONTROL_STREAM, REQUIRED);
}

/** A message of the stream as stored: its subject, then the body (parsed by whoever reads it). */
export interface StoredControl {
  subject: string;
  data: Uint8Array;
}

export interface ControlStreamOptions {
  url: string;
  /** The collector's NATS user (files username/password of a mounted Secret), read at each connect. */
  userFiles?: NatsUserFiles;
  /** How long a publish or a read may wait for JetStream (default 5 s). */
  timeoutMs?: number;
}

export interface ControlStreamEvents {
  status: [status: string];
}

/**
 * The collector's side of PGWARDEN_CONTROL: publishes approvers' actions and reads back the policies' states. It
 * keeps no state of its own, so every replica, and a restarted one, answers from the stream alone.
 */
export class ControlStream extends EventEmitter<ControlStreamEvents> {
  private nc: NatsConnection | null = null;
  private running = false;
  private up = false;
  private streamReady = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly opts: ControlStreamOptions) {
    super();
  }

  get ready(): boolean {
    return this.up && this.streamReady && this.nc !== null && !this.nc.isClosed();
  }

  start(): void {
    this.running = true;
    this.loop = this.connectAndEnsure();
  }

  /** Publishes `m` on its subject and waits for the stream's acknowledgement. */
  async publish(m: ControlMessage): Promise<void> {
    const nc = this.connected();
    try {
      await jetstream(nc, { timeout: this.timeoutMs }).publish(controlSubject(m), JSON.stringify(m), {
        msgID: m.id,
        expect: { streamName: CONTROL_STREAM },
      });
    } catch (err) {
      throw unavailable(`publishing the control message failed: ${(err as Error).message}`, err);
    }
  }

  /** The last message of every subject under `filter`, read from the stream leader (so never behind a publish). */
  async lastPerSubject(filter: string): Promise<StoredControl[]> {
    const nc = this.connected();
    try {
      // The API was checked when the stream was set up; a list need not ask again.
      const jsm = await jetstreamManager(nc, { timeout: this.timeoutMs, checkAPI: false });
      const { state } = await jsm.streams.info(CONTROL_STREAM, { subjects_filter: filter });
      const subjects = Object.keys(state.subjects ?? {});
      const stored = await Promise.all(
        subjects.map((s) => jsm.streams.getMessage(CONTROL_STREAM, { last_by_subj: s })),
      );
      return stored.flatMap((m) => (m ? [{ subject: m.subject, data: m.data }] : []));
    } catch (err) {
      throw unavailable(`reading the control stream failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * Drops what `subject` holds: a terminate its sidecar reported applying has done its work, and the stream would
   * otherwise keep one message per terminated session for ever. Best effort: a failure leaves one small message.
   */
  async forget(subject: string): Promise<void> {
    const nc = this.connected();
    const jsm = await jetstreamManager(nc, { timeout: this.timeoutMs, checkAPI: false });
    await jsm.streams.purge(CONTROL_STREAM, { filter: subject });
  }

  async close(): Promise<void> {
    this.running = false;
    if (this.nc) await closeWithin(this.nc, CLOSE_DRAIN_MS);
    await this.loop;
    this.nc = null;
  }

  private get timeoutMs(): number {
    return this.opts.timeoutMs ?? 5000;
  }

  private connected(): NatsConnection {
    const nc = this.nc;
    if (!nc || !this.ready) throw unavailable('NATS is not connected or the control stream is not set up yet');
    return nc;
  }

  private async connectAndEnsure(): Promise<void> {
    const nc = await connectCollectorNats({
      url: this.opts.url,
      name: 'pgwarden-collector-control',
      userFiles: this.opts.userFiles,
      running: () => this.running,
      onStatus: (s) => this.emit('status', s),
      onUp: (up) => {
        this.up = up;
        // A server that comes back may have lost its store (or been replaced): set the stream up again.
        if (up && this.nc) void this.ensure(this.nc);
      },
    });
    if (!nc) return;
    this.nc = nc;
    await this.ensure(nc);
  }

  /** Retries until the stream is set up, the connection closes or the collector stops. */
  private async ensure(nc: NatsConnection): Promise<void> {
    while (this.running && !nc.isClosed()) {
      try {
        await ensureControlStream(await jetstreamManager(nc, { timeout: this.timeoutMs }));
        this.streamReady = true;
        this.emit('status', 'stream ready');
        return;
      } catch (err) {
        this.emit('status', `control stream not set up: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}

/** The longest close() waits for the connection to drain before closing it outright. */
const CLOSE_DRAIN_MS = 2000;

const unavailable = (message: string, cause?: unknown) =>
  new CollectorError('COLLECTOR_CONTROL_UNAVAILABLE', message, { cause });
