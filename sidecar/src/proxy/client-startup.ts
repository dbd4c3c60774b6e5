import { F } from '../protocol/codes.js';
import { ProtocolError } from '../protocol/errors.js';
import type { Framer, FramerHandler } from '../protocol/framer.js';
import { decodePassword, parseStartupPacket, type StartupPacket } from '../protocol/frontend-messages.js';

export type StartupEvent =
  | { kind: 'startup'; packet: Extract<StartupPacket, { kind: 'startup' }> }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | { kind: 'password'; password: string };

/**
 * The client side of connection start: answers SSLRequest and GSSENCRequest with 'N' (the sidecar listens on
 * loopback; the agent speaks plain TCP to it), then reports the StartupMessage, a CancelRequest, or the
 * PasswordMessage. It suspends the framer after each event; the session resumes it when it wants more.
 * https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP
 */
export class ClientStartup implements FramerHandler {
  private readonly framer: () => Framer;
  private readonly write: (b: Buffer) => void;
  private readonly onEvent: (e: StartupEvent) => void;
  expectPassword = false;

  constructor(framer: () => Framer, write: (b: Buffer) => void, onEvent: (e: StartupEvent) => void) {
    this.framer = framer;
    this.write = write;
    this.onEvent = onEvent;
  }

  limit(type: number): number {
    return this.expectPassword && type === F.Password ? 65535 : -1;
  }

  header(): number {
    return 1; // WHOLE
  }

  whole(_type: number, buf: Buffer, start: number, end: number): boolean {
    this.expectPassword = false;
    this.framer().suspend();
    this.onEvent({ kind: 'password', password: decodePassword(buf, start, end) });
    return false;
  }

  pass(): void {
    // Nothing is forwarded before the session is established.
  }

  startup(buf: Buffer, start: number, end: number): void {
    const p = parseStartupPacket(buf, start, end);
    const framer = this.framer();
    if (p.kind === 'ssl' || p.kind === 'gssenc') {
      framer.startup = true;
      this.write(Buffer.from('N'));
      return;
    }
    if (p.kind === 'cancel') {
      framer.suspend();
      this.onEvent({ kind: 'cancel', processId: p.processId, secretKey: p.secretKey });
      return;
    }
    if (!('user' in p.params) || p.params.user === '') {
      throw new ProtocolError(
        'PGW_PROTO_STARTUP_MALFORMED',
        'no PostgreSQL user name specified in startup packet',
        '28000',
      );
    }
    framer.suspend();
    this.onEvent({ kind: 'startup', packet: p });
  }
}
