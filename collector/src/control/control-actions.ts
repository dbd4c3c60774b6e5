import { type KeyObject, randomUUID } from 'node:crypto';
import {
  type ControlMessage,
  type ControlPolicyRef,
  controlSubject,
  parseControlMessage,
  type SuspensionMessage,
  signControl,
  type TerminateMessage,
  verifyControl,
} from '@pgwarden/policy';

/** What an approver asks for: end one session, or suspend or resume one policy. */
export type ControlTarget = Pick<TerminateMessage, 'kind' | 'session'> | Pick<SuspensionMessage, 'kind' | 'policy'>;

export type ControlKind = ControlMessage['kind'];

/** The message the collector publishes for `target`: a fresh id, who and why, now; signed when it has a key. */
export function controlMessage(
  target: ControlTarget,
  by: string,
  reason: string,
  signingKey?: KeyObject,
  now = new Date(),
): ControlMessage {
  const m = { v: 1 as const, id: randomUUID(), by, reason, at: now.toISOString(), ...target } as ControlMessage;
  return signingKey ? signControl(m, signingKey) : m;
}

/** A policy whose last control message is `suspend`, as the suspensions route lists it. */
export interface Suspension {
  policy: ControlPolicyRef;
  by: string;
  reason: string;
  at: string;
  id: string;
  /** It carries a signature, one `verifyKey` (the collector's own, when it has one) verifies. */
  signed: boolean;
}

/**
 * The suspended policies among the stream's last messages per subject, by namespace and name. A message that does
 * not parse, or sits on another subject than its own (a replay for another policy), says nothing and is skipped.
 */
export function suspensionsOf(
  stored: readonly { subject: string; data: Uint8Array }[],
  verifyKey?: KeyObject,
): Suspension[] {
  const out: Suspension[] = [];
  for (const { subject, data } of stored) {
    const m = parseControlMessage(data);
    if (m?.kind !== 'suspend' || controlSubject(m) !== subject) continue;
    const signed = m.sig !== undefined && (!verifyKey || verifyControl(m, [verifyKey]));
    out.push({ policy: m.policy, by: m.by, reason: m.reason, at: m.at, id: m.id, signed });
  }
  const key = (s: Suspension) => `${s.policy.namespace}/${s.policy.name}`;
  return out.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}
