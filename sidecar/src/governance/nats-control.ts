import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import {
  type AuditControl,
  CONTROL_STREAM,
  type ControlMessage,
  type ControlPolicyRef,
  controlSubject,
  decisionVerifyKeys,
  parseControlMessage,
  type SuspensionMessage,
  suspensionSubject,
  type TerminateMessage,
  terminateSubject,
  verifyControl,
} from '@pgwarden/policy';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { GovernanceEvent } from './governance-events.js';
import { registerOnce } from './governance-metrics.js';

/** What the control channel needs from one listener (one policy) of the sidecar. */

/** Direct gets of the control read-back in flight at once (one connection; each is a small request). */
const READ_BACK_PARALLEL = 32;
export interface ControlListener {
  /** The policy it serves, as control subjects name it; undefined while none is loaded. */
  policy(): ControlPolicyRef | undefined;
  /** The policy's approval.decisionKeys (PEM): when there are any, only messages they signed are applied. */
  decisionKeys(): readonly string[];
  /** Ids of its open sessions. */
  sessionIds(): Iterable<string>;
  hasSession(id: string): boolean;
  /** Ends the session now; returns how many sessions ended (0 when it was already gone). */
  terminate(m: TerminateMessage): number;
  /** Sets (suspend) or lifts (undefined) the live suspension; returns how many sessions it ended. */
  suspend(m: SuspensionMessage | undefined): number;
  /** The live suspension in force, if any. */
  suspension(): SuspensionMessage | undefined;
}

export interface NatsControlOptions {
  /** Registers for each (re)connect of the audit sink's NATS connection (NatsAuditSink.onConnected). */
  onConnected(listener: (nc: NatsConnection) => void): () => void;
  listeners: readonly ControlListener[];
  emit(e: GovernanceEvent): void;
  /** How long a read-back may take (default 5 s). */
  requestTimeoutMs?: number;
  log?: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * The sidecar's end of live control (policy/src/control/control-messages.ts): applies the collector's `terminate`,
 * `suspend` and `resume` over the audit sink's own NATS connection and credentials.
 *
 * Subscribes only to the subjects it needs (`pgwarden.control.session.>` and each listener's policy subject), so a
 * per-namespace NATS user can be limited to its own policies. After every (re)connect it reads back the last message
 * of each policy subject and of each open session's subject from the stream: a suspension given while this sidecar
 * was cut off, or before it started, applies as soon as it is connected. Until the first connection the sidecar does
 * not know of any live suspension (spec.suspend, delivered by Kubernetes, does not depend on NATS).
 */
export function natsControl(opts: NatsControlOptions): { close(): void; ready: Promise<void> } {
  const log = opts.log ?? (() => {});
  const timeout = opts.requestTimeoutMs ?? 5000;
  // The message last applied per subject: a read-back of it, or a redelivery, changes nothing; an older one is a
  // replay (someone able to publish there re-sending an old signed `resume`) and is not applied.
  const applied = new Map<string, { id: string; at: number }>();
  let subscriptions: Subscription[] = [];
  let connection: NatsConnection | undefined;
  let closed = false;
  // Settled by the first read-back, done or failed: until then this sidecar does not know its live state.
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });

  const refuse = (reason: 'malformed' | 'subject' | 'signature', subject: string, kind?: string) => {
    opts.emit({ type: 'control.refused', reason, subject, ...(kind ? { kind } : {}) });
    log('warn', `control: ignored a message (${reason})`, { subject });
  };

  const consider = (subject: string, data: Uint8Array) => {
    const m = parseControlMessage(data);
    if (!m) return refuse('malformed', subject);
    // A message is only good for the subject it names: NATS permissions are granted per subject.
    if (controlSubject(m) !== subject) return refuse('subject', subject, m.kind);
    const last = applied.get(subject);
    const at = Date.parse(m.at);
    if (last !== undefined && (last.id === m.id || !(at > last.at))) return;
    const listener =
      m.kind === 'terminate'
        ? opts.listeners.find((l) => l.hasSession(m.session))
        : opts.listeners.find((l) => samePolicy(l.policy(), m.policy));
    // Another sidecar's session or policy: not an error, every sidecar sees every session's messages.
    if (!listener) return;
    const keys = decisionVerifyKeys(listener.decisionKeys());
    const signed = keys.length > 0;
    if (signed && !verifyControl(m, keys)) return refuse('signature', subject, m.kind);
    applied.set(subject, { id: m.id, at });
    let ended: number;
    if (m.kind === 'terminate') {
      ended = listener.terminate(m);
      // The session is gone: nothing of it is read back again.
      applied.delete(subject);
    } else if (m.kind === 'suspend') ended = listener.suspend(m);
    else {
      // A resume read back at start (or repeated) lifts nothing: not an action taken here.
      if (!listener.suspension()) return;
      ended = listener.suspend(undefined);
    }
    opts.emit({ type: 'control.applied', control: auditControl(m, signed, ended) });
    log('info', `control: ${m.kind} applied`, {
      id: m.id,
      by: m.by,
      ...(m.kind === 'terminate' ? { session: m.session } : { policy: m.policy }),
      sessionsEnded: ended,
    });
  };

  const readBack = async (nc: NatsConnection) => {
    const subjects: string[] = [];
    for (const l of opts.listeners) {
      const p = l.policy();
      if (p) subjects.push(suspensionSubject(p));
      for (const id of l.sessionIds()) subjects.push(terminateSubject(id));
    }
    if (subjects.length === 0) return;
    let jsm: Awaited<ReturnType<typeof jetstreamManager>>;
    try {
      jsm = await jetstreamManager(nc, { timeout, checkAPI: false });
    } catch (err) {
      log('warn', 'control: JetStream is not available for the read-back', { err: (err as Error).message });
      return;
    }
    // A direct get on a stream that does not exist is not answered at all: it would wait out the timeout for each
    // subject, and logins wait for this read-back. Asking for the stream first answers at once.
    try {
      await jsm.streams.info(CONTROL_STREAM);
    } catch (err) {
      // No collector has created it yet: no action to read back.
      if (/stream not found/i.test((err as Error).message) || (err as Error).name === 'StreamNotFoundError') return;
      // Not allowed to ask (a NATS user without $JS.API.STREAM.INFO.PGWARDEN_CONTROL): read back subject by subject.
    }
    // Subjects are read back READ_BACK_PARALLEL at a time: where the stream is missing and could not be asked
    // about, each get waits out the timeout, and one after another they would keep logins waiting that many times.
    const one = async (subject: string) => {
      if (closed || nc.isClosed()) return;
      try {
        const stored = await jsm.direct.getMessage(CONTROL_STREAM, { last_by_subj: subject });
        if (stored) consider(subject, stored.data);
      } catch (err) {
        // Nothing on the subject, or no stream yet (no collector has started): nothing to apply.
        if (!/no message found|not found/i.test((err as Error).message))
          log('warn', 'control: could not read back', { subject, err: (err as Error).message });
      }
    };
    let next = 0;
    const worker = async () => {
      while (next < subjects.length) await one(subjects[next++]);
    };
    await Promise.all(Array.from({ length: Math.min(READ_BACK_PARALLEL, subjects.length) }, worker));
  };

  const subscribe = (nc: NatsConnection) => {
    for (const s of subscriptions) s.unsubscribe();
    const subjects = ['pgwarden.control.session.>'];
    for (const l of opts.listeners) {
      const p = l.policy();
      if (p) subjects.push(suspensionSubject(p));
    }
    subscriptions = subjects.map((subject) => {
      const sub = nc.subscribe(subject);
      void (async () => {
        for await (const m of sub) consider(m.subject, m.data);
      })().catch((err: Error) => log('warn', 'control: subscription ended', { subject, err: err.message }));
      return sub;
    });
  };

  const off = opts.onConnected((nc) => {
    if (closed) return;
    // The client resubscribes by itself after a reconnect; a new connection needs new subscriptions.
    if (nc !== connection) {
      connection = nc;
      subscribe(nc);
    }
    void readBack(nc).finally(markReady);
  });
  return {
    ready,
    close() {
      closed = true;
      off();
      for (const s of subscriptions) s.unsubscribe();
      subscriptions = [];
    },
  };
}

const samePolicy = (a: ControlPolicyRef | undefined, b: ControlPolicyRef) =>
  a !== undefined && a.namespace === b.namespace && a.name === b.name;

function auditControl(m: ControlMessage, signed: boolean, sessionsEnded: number): AuditControl {
  return {
    kind: m.kind,
    id: m.id,
    by: m.by,
    reason: m.reason,
    at: m.at,
    ...(m.kind === 'terminate' ? { session: m.session } : { policy: { ...m.policy } }),
    signed,
    sessionsEnded,
  };
}

/** Control messages as a metric: what was applied, and what was refused and why (an alert on `signature`). */
export class ControlMetrics {
  private readonly total = new Counter({
    name: 'pgwarden_control_messages_total',
    help: 'Control messages from the collector (terminate, suspend, resume) by kind and outcome: applied, or refused as malformed, on the wrong subject, or without a valid signature',
    labelNames: ['kind', 'outcome'],
    registers: [],
  });

  private readonly stateKnown = new Gauge({
    name: 'pgwarden_live_control_state_known',
    help: '1 once live control has read back whether the policies are suspended (always 1 without live control: no NATS audit sink); 0 while NATS has not answered since start, when logins are refused unless spec.liveControl.failMode is open',
    registers: [],
  });

  /** Whether live control has read back the policies' state (see startGovernedSidecar). */
  setStateKnown(known: boolean): void {
    this.stateKnown.set(known ? 1 : 0);
  }

  readonly onEvent = (e: GovernanceEvent): void => {
    if (e.type === 'control.applied') this.total.inc({ kind: e.control.kind, outcome: 'applied' });
    else if (e.type === 'control.refused') this.total.inc({ kind: e.kind ?? 'unknown', outcome: e.reason });
  };

  register(registry: Registry): void {
    registerOnce(registry, [
      ['pgwarden_control_messages_total', this.total],
      ['pgwarden_live_control_state_known', this.stateKnown],
    ]);
  }
}
