/**
 * The JetStream message id of an event: `<session>.<seq>` and the first 16 hex digits of its hash. JetStream drops
 * a message whose id it has seen within the stream's duplicate window, whatever its subject, so with the bare
 * position a party allowed to publish audit events (another namespace's sidecar user) that learned a session id
 * could publish `<session>.<seq>` first and have the real event dropped as a duplicate. The hash covers the event's
 * time, content and predecessor, so that id cannot be guessed ahead, while a re-send of the same event (a retry, a
 * spool replay) still carries the same id and is still dropped.
 */
export function messageId(position: string, hash: unknown): string {
  const id = typeof hash === 'string' && hash.length === 64 ? `${position}.${hash.slice(0, 16)}` : position;
  return id.replace(/[\t\n\r]/g, '_');
}
