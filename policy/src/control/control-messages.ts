import type { KeyObject } from 'node:crypto';
import { isApprovalId } from '../approvals/approval-messages.js';
import { signMessage, verifyMessage } from '../crypto/domain-signature.js';

/**
 * Live control of running sidecars: the collector's `terminate` (end one session now) and `suspend` / `resume` (a
 * policy's kill switch, in seconds and without a Kubernetes write). Shared by the collector, which publishes them
 * for approvers, and the sidecar, which applies them.
 *
 *   collector → pgwarden.control.session.<session id>         terminate
 *   collector → pgwarden.control.policy.<namespace>.<policy>  suspend | resume (the subject's last message is the
 *                                                             policy's state; namespace `_` for a policy without one)
 *
 * Both go to JetStream stream PGWARDEN_CONTROL, which keeps one message per subject: a sidecar sees each live on a
 * plain subscription, and reads back the last message of its policies' and open sessions' subjects after every
 * (re)connect, so an action taken while it was cut off from NATS applies when it is back.
 *
 * Signed like approval decisions: with a policy's `approval.decisionKeys`, a sidecar applies only messages an Ed25519
 * key there signed (the collector's approval signing key); without, it trusts NATS permissions (only the collector
 * may publish under pgwarden.control.>). The signature covers every field, the subject's names included, so a
 * message cannot be replayed for another session or policy.
 */

export const CONTROL_STREAM = 'PGWARDEN_CONTROL';
export const CONTROL_SUBJECTS = 'pgwarden.control.>';

/** The namespace token of a policy that has none (a local policy file): not a valid Kubernetes name. */
export const NO_NAMESPACE = '_';

export interface ControlPolicyRef {
  /** NO_NAMESPACE for a policy without one. */
  namespace: string;
  name: string;
}

interface ControlBase {
  v: 1;
  /** A UUID per action (the collector's), so the audit trail can name the action that ended a session. */
  id: string;
  /** Who acted: the approver entry's name in the collector's approvers file. */
  by: string;
  /** Why, as the approver wrote it (1–1024 characters). */
  reason: string;
  /** When the collector published it (RFC 3339). */
  at: string;
  /** Ed25519 signature (base64) by the collector's approval signing key, when it has one. */
  sig?: string;
}

export interface TerminateMessage extends ControlBase {
  kind: 'terminate';
  /** The sidecar session id (the audit trail's `session.id`). */
  session: string;
}

export interface SuspensionMessage extends ControlBase {
  kind: 'suspend' | 'resume';
  policy: ControlPolicyRef;
}

export type ControlMessage = TerminateMessage | SuspensionMessage;

export const MAX_CONTROL_REASON = 1024;

/** Kubernetes namespace (DNS label) and object name (DNS subdomain): the subject tokens they become are safe. */
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
export const isControlNamespace = (ns: unknown): ns is string =>
  ns === NO_NAMESPACE || (typeof ns === 'string' && NAMESPACE.test(ns));
export const isControlPolicyName = (name: unknown): name is string =>
  typeof name === 'string' && NAME.test(name) && !name.includes('..');

export const terminateSubject = (session: string) => `pgwarden.control.session.${session}`;
export const suspensionSubject = (p: ControlPolicyRef) => `pgwarden.control.policy.${p.namespace}.${p.name}`;
/** The subject a message belongs on: a message read from any other subject is ignored. */
export const controlSubject = (m: ControlMessage) =>
  m.kind === 'terminate' ? terminateSubject(m.session) : suspensionSubject(m.policy);

/** A policy's control reference from its (optional) namespace. */
export const controlPolicyRef = (name: string, namespace?: string): ControlPolicyRef => ({
  namespace: namespace || NO_NAMESPACE,
  name,
});

const str = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

/** Parses a control message; undefined for anything malformed (the receiver ignores it and counts it). */
export function parseControlMessage(data: Uint8Array | string): ControlMessage | undefined {
  let o: Record<string, unknown>;
  try {
    const v = JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8')) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    o = v as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (o.v !== 1 || !isApprovalId(o.id) || !str(o.by, 256) || !str(o.reason, MAX_CONTROL_REASON) || !str(o.at, 64))
    return undefined;
  if (o.sig !== undefined && !str(o.sig, 128)) return undefined;
  const base = {
    v: 1 as const,
    id: o.id,
    by: o.by,
    reason: o.reason,
    at: o.at,
    ...(o.sig !== undefined ? { sig: o.sig as string } : {}),
  };
  if (o.kind === 'terminate') {
    if (!isApprovalId(o.session)) return undefined;
    return { ...base, kind: 'terminate', session: o.session };
  }
  if (o.kind === 'suspend' || o.kind === 'resume') {
    const p = o.policy as Record<string, unknown> | undefined;
    if (!p || typeof p !== 'object' || !isControlNamespace(p.namespace) || !isControlPolicyName(p.name))
      return undefined;
    return { ...base, kind: o.kind, policy: { namespace: p.namespace, name: p.name } };
  }
  return undefined;
}

/** Domain separation: these bytes are signed for nothing else (not an approval decision, not a checkpoint). */
const CONTEXT = 'pgwarden control v1\n';

/** The message with its signature (base64) in `sig`; the key is the collector's approval signing key. */
export function signControl<M extends ControlMessage>(m: M, key: KeyObject): M {
  return { ...m, sig: signMessage(CONTEXT, m, key) };
}

/** Whether one of `keys` (decisionVerifyKeys of a policy's approval.decisionKeys) signed exactly this message. */
export function verifyControl(m: ControlMessage, keys: readonly KeyObject[]): boolean {
  return verifyMessage(CONTEXT, m, keys);
}
