import type { NatsConnection } from '@nats-io/transport-node';

/**
 * The part of nats.js's protocol handler (`NatsConnectionImpl.protocol`, what its own JetStream code publishes acks
 * through) used here: appending protocol text to the outbound buffer, flushed at the end of the turn.
 */
interface ProtocolWriter {
  sendCommand(cmd: string): void;
  noMorePublishing?: boolean;
}

/**
 * Explicit acknowledgements of JetStream messages, written as one protocol command per turn of the event loop.
 * An ack is the message `+ACK` published to the delivery's reply subject
 * (https://docs.nats.io/reference/reference-protocols/nats_api_reference#acknowledging-messages), the same bytes
 * `JsMsg.ack()` sends; but a publish per message costs a protocol line encoded on its own (a small buffer each)
 * and three buffers queued, which for single-event messages was a tenth of the collector's CPU. Here the lines of
 * a turn's acks are joined into one string and encoded once. Each message is still acknowledged by itself: AckAll
 * would acknowledge other collectors' deliveries of a shared durable consumer.
 */
export class JetStreamAcks {
  private pending = '';
  private readonly writer: ProtocolWriter | null;

  constructor(private readonly nc: NatsConnection) {
    const protocol = (nc as unknown as { protocol?: Partial<ProtocolWriter> }).protocol;
    this.writer = typeof protocol?.sendCommand === 'function' ? (protocol as ProtocolWriter) : null;
  }

  /** Whether acks go out batched (false: the nats.js in use has no protocol writer, and `ack` publishes each). */
  get batched(): boolean {
    return this.writer !== null;
  }

  /** Acknowledges the delivery whose reply subject is `reply`, by the end of the current turn. */
  ack(reply: string): void {
    if (!reply) return;
    if (!this.writer) {
      this.publish(reply);
      return;
    }
    if (this.pending === '') queueMicrotask(() => this.flush());
    this.pending += `PUB ${reply} 4\r\n+ACK\r\n`;
  }

  private flush(): void {
    const cmd = this.pending;
    this.pending = '';
    // As `publish` would refuse to: a closed or draining connection sends nothing, and the server redelivers.
    if (this.nc.isClosed() || this.writer?.noMorePublishing) return;
    this.writer?.sendCommand(cmd);
  }

  private publish(reply: string): void {
    try {
      this.nc.publish(reply, ACK);
    } catch {
      // Closed or draining: unacknowledged, so redelivered.
    }
  }
}

const ACK = Uint8Array.of(0x2b, 0x41, 0x43, 0x4b); // '+ACK'
