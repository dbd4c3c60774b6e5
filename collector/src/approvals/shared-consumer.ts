import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { APPROVALS_STREAM } from '@pgwarden/policy';
import { ensureApprovalsStream } from './approval-queue.js';

const NANOS_PER_MS = 1_000_000;

export interface SharedConsumerSpec {
  /** The durable's name: every replica that names it shares its deliveries. */
  durable: string;
  /** The subjects it delivers, e.g. `pgwarden.approval.request.>`. */
  filterSubject: string;
  /** A delivery not acknowledged within this is given to a replica again. */
  ackWaitMs: number;
}

export interface SharedConsumerHooks {
  running(): boolean;
  /** Nothing is taken until this holds (the approval queue has replayed its stream). */
  mayStart(): boolean;
  status(s: string): void;
  deliver(m: JsMsg): void;
}

/**
 * One durable pull consumer on PGWARDEN_APPROVALS with explicit acks, shared by every collector replica so that
 * JetStream hands each message to one of them (https://docs.nats.io/nats-concepts/jetstream/consumers). Supervised
 * like the collector's other consumers: any end (a server restart that lost it, the stream or consumer deleted)
 * rebuilds it after a pause; the client itself re-pulls across plain reconnects.
 */
export class SharedConsumer {
  private messages: ConsumerMessages | null = null;
  private consumingNow = false;

  constructor(
    private readonly spec: SharedConsumerSpec,
    private readonly hooks: SharedConsumerHooks,
  ) {}

  get consuming(): boolean {
    return this.consumingNow;
  }

  stop(): void {
    this.messages?.stop();
  }

  async run(nc: NatsConnection): Promise<void> {
    const { hooks } = this;
    while (hooks.running() && !nc.isClosed()) {
      try {
        while (hooks.running() && !hooks.mayStart()) await pause(100);
        if (!hooks.running()) break;
        this.messages = await this.follow(nc);
        if (!hooks.running()) {
          this.messages.stop();
          break;
        }
        this.consumingNow = true;
        hooks.status(`consuming ${this.spec.durable}`);
        const ended = await this.messages.closed();
        if (ended instanceof Error) throw ended;
      } catch (err) {
        if (!hooks.running()) break;
        hooks.status(`${this.spec.durable} consumer error: ${(err as Error).message}`);
      }
      this.consumingNow = false;
      if (hooks.running()) await pause(500);
    }
    this.consumingNow = false;
  }

  private async follow(nc: NatsConnection): Promise<ConsumerMessages> {
    const jsm = await jetstreamManager(nc);
    await ensureApprovalsStream(jsm);
    const { durable } = this.spec;
    const config: Partial<ConsumerConfig> & { durable_name: string } = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      // Created on the first start with notifications on: what the stream already holds is not announced.
      deliver_policy: DeliverPolicy.New,
      filter_subject: this.spec.filterSubject,
      ack_wait: this.spec.ackWaitMs * NANOS_PER_MS,
      // Messages out at once across every replica, waiting retries included: bounds the posts in flight.
      max_ack_pending: 256,
    };
    try {
      const info = await jsm.consumers.info(APPROVALS_STREAM, durable);
      if (info.config.ack_wait !== config.ack_wait || info.config.max_ack_pending !== config.max_ack_pending)
        await jsm.consumers.update(APPROVALS_STREAM, durable, {
          ack_wait: config.ack_wait,
          max_ack_pending: config.max_ack_pending,
        });
    } catch (err) {
      if ((err as Error).name !== 'ConsumerNotFoundError') throw err;
      // Two replicas creating it at once with the same configuration both succeed.
      await jsm.consumers.add(APPROVALS_STREAM, config);
    }
    const consumer = await jetstream(nc).consumers.get(APPROVALS_STREAM, durable);
    return consumer.consume({
      // One message pulled ahead at a time: one a stopping replica pulled but never started waits out ack_wait.
      max_messages: 1,
      // A deleted consumer or stream ends the consume, and run() creates them again.
      abort_on_missing_resource: true,
      callback: (m) => this.hooks.deliver(m),
    });
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
