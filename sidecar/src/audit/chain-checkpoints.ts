import type { AuditCheckpoint, AuditSigner, ChainState } from '@pgwarden/policy';

/**
 * A chain the checkpointer may sign. Whoever appends an event to it sets `unsigned`: the one thing the
 * per-statement path does for signing (docs/benchmarks.md), since the checkpoint itself is signed off that path.
 */
export interface SignableChain {
  /** `session.id` of the chain: part of the signed bytes. */
  readonly id: string;
  readonly state: ChainState;
  unsigned: boolean;
  /** Seals an `audit.checkpoint` event with this body into the chain, and sends it. */
  append(checkpoint: AuditCheckpoint): void;
}

export interface ChainCheckpoints {
  /** Includes the chain in the periodic sweep. */
  track(chain: SignableChain): void;
  /** Signs the chain's latest event at once if no checkpoint covers it yet, and drops it from the sweep. */
  finish(chain: SignableChain): void;
  /**
   * Signs every tracked chain that has unsigned events, `last` (the sidecar's own chain) after the others and after
   * `between`, which may append to it: what the sidecar's chain says about the others (audit.heads) is then signed
   * in the same sweep.
   */
  sweep(between?: () => void): void;
  /** A last sweep; nothing is tracked afterwards. */
  close(between?: () => void): void;
}

/**
 * The signing half of the recorder's periodic audit tick (audit-recorder.ts owns the timer, one per recorder, so
 * that heads and checkpoints are written in one order): each sweep appends a checkpoint to each tracked chain with
 * events no checkpoint covers yet, so at most one interval of a chain's events is unsigned at a time and an idle
 * chain costs nothing. A checkpoint signs `state` as it stands: its seq and the hash of its latest event, which the
 * checkpoint event then links to as prevHash (checkpoint-signature.ts).
 */
export function chainCheckpoints(signer: AuditSigner, last: SignableChain): ChainCheckpoints {
  const tracked = new Set<SignableChain>();
  const sign = (c: SignableChain) => {
    if (!c.unsigned || c.state.prevHash === null) return;
    // Cleared first: an event the sink adds while this one is sent (an audit.gap) must count as unsigned again.
    c.unsigned = false;
    c.append(signer.checkpoint(c.id, c.state.seq, c.state.prevHash));
  };
  const sweep = (between?: () => void) => {
    for (const c of tracked) sign(c);
    between?.();
    sign(last);
  };
  return {
    track: (c) => void tracked.add(c),
    finish(c) {
      tracked.delete(c);
      sign(c);
    },
    sweep,
    close(between) {
      sweep(between);
      tracked.clear();
    },
  };
}
