import {
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamManager,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { AUDIT_STREAM, AUDIT_SUBJECT_PREFIX } from '@pgwarden/policy';

/** Limits of the PGWARDEN_AUDIT stream; applied when the sidecar creates it or finds it different. */
export interface AuditStreamLimits {
  /** Oldest message kept; 0 = forever. Default 30 days. */
  maxAgeMs: number;
  /** Stream size cap in bytes; -1 = unlimited. Default -1. */
  maxBytes: number;
  /**
   * Window within which a re-published message id is dropped as a duplicate. At least 2 minutes (NATS's own
   * default), so a publish retried after a reconnect or a spool drain deduplicates.
   * https://docs.nats.io/using-nats/developer/develop_jetstream/model_deep_dive#message-deduplication
   */
  duplicateWindowMs: number;
  replicas: number;
}

export const DEFAULT_STREAM_LIMITS: AuditStreamLimits = {
  maxAgeMs: 30 * 24 * 3600 * 1000,
  maxBytes: -1,
  duplicateWindowMs: 2 * 60 * 1000,
  replicas: 1,
};

export const MIN_DUPLICATE_WINDOW_MS = 2 * 60 * 1000;
const NS_PER_MS = 1_000_000;
const STREAM_NOT_FOUND = 10059;

/**
 * Makes sure the audit stream exists with our subjects and limits. An existing stream keeps any extra subjects
 * an operator added; only the limits we own are reconciled.
 */
export async function ensureAuditStream(
  jsm: JetStreamManager,
  limits: AuditStreamLimits,
): Promise<'created' | 'updated' | 'unchanged'> {
  const want: Partial<StreamConfig> = {
    max_age: limits.maxAgeMs * NS_PER_MS,
    max_bytes: limits.maxBytes,
    duplicate_window: Math.max(limits.duplicateWindowMs, MIN_DUPLICATE_WINDOW_MS) * NS_PER_MS,
    // At a size cap JetStream's default (discard old) deletes the oldest messages to make room, consumed or not:
    // events the collector had not stored yet were lost while every publish was acknowledged. Discard new
    // refuses the publish instead, and the sidecar keeps the event in its spool (max_age still expires old ones).
    // https://docs.nats.io/nats-concepts/jetstream/streams#discardpolicy
    discard: DiscardPolicy.New,
  };
  const subject = `${AUDIT_SUBJECT_PREFIX}.>`;
  try {
    const info = await jsm.streams.info(AUDIT_STREAM);
    const cfg = info.config;
    const subjects = cfg.subjects.includes(subject) ? cfg.subjects : [...cfg.subjects, subject];
    if (
      subjects === cfg.subjects &&
      cfg.max_age === want.max_age &&
      cfg.max_bytes === want.max_bytes &&
      cfg.duplicate_window === want.duplicate_window &&
      cfg.discard === want.discard
    ) {
      return 'unchanged';
    }
    await jsm.streams.update(AUDIT_STREAM, { ...want, subjects });
    return 'updated';
  } catch (err) {
    if (!(err instanceof JetStreamApiError) || err.code !== STREAM_NOT_FOUND) throw err;
  }
  await jsm.streams.add({
    name: AUDIT_STREAM,
    subjects: [subject],
    storage: StorageType.File,
    num_replicas: limits.replicas,
    ...want,
  });
  return 'created';
}
