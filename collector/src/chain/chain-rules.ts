import { hashEvent, type AuditEvent as PolicyAuditEvent } from '@pgwarden/policy';
import type { ChainEvent, ChainRules } from './verify-chain.js';

/**
 * The chain rules of audit schema v1, from the shared definition in @pgwarden/policy: seq starts at 1, the first
 * event's prevHash is null, `hash` is sha256 over the canonical JSON of the event without `hash`, and the id is
 * `<session>.<seq>` (the JetStream message id).
 */
export const schemaV1Rules: ChainRules = {
  firstSeq: 1,
  hashOf: (e: ChainEvent) => hashEvent(e as unknown as PolicyAuditEvent),
  idOf: (sessionId: string, seq: number) => `${sessionId}.${seq}`,
};
