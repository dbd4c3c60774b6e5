/**
 * Per chain: `signed` every event (but the closing checkpoint) vouched for; `partial` events after the last valid
 * checkpoint; `unsigned` no valid checkpoint; `unverified` checkpoints that could not be judged (no keys).
 * A module of its own, importing nothing, for the package's light `client` entry.
 */
export const SIGNATURE_STATES = ['signed', 'partial', 'unsigned', 'unverified'] as const;
export type SignatureState = (typeof SIGNATURE_STATES)[number];
