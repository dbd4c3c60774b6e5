import type { Decision, Subjects } from '@pgwarden/policy';
import type { Identity } from '../proxy/hooks.js';

/**
 * Approval grants: an approver who approves a held statement may also approve, for a while, later statements of
 * the same shape (approval.grants in the policy, `grant` in the decision message). An agent that repeats one
 * reviewed statement with different values then needs one approval, not one per row.
 *
 * What a grant covers is deliberately narrow. A later statement is covered only when all of these are equal to the
 * approved one's: the policy (name and hash: any reload that changes it ends every grant), the rule that held it,
 * who asks (namespace, service account, OIDC user), the SQL's fingerprint (its text with constants replaced), and
 * what the analysis found in it (each statement's kind, relations and functions). The later statement is analysed
 * and decided afresh; a grant only stands in for the person when that decision is again `review`, so a rule or
 * guardrail that denies it still denies it. Statements whose effect a constant decides are never covered: a DO
 * block's body, the setting a SET or set_config() names; two such statements share a fingerprint whatever they do.
 * Nor are statements with a constant anywhere but as a value of a column of their one relation (the policy
 * package's constantsOnlyAsValues, which reads the parse tree; PolicySession asks it before offering a grant).
 */

export interface Grant {
  /** The approval that gave it (the request's id). */
  id: string;
  /** The approver's name. */
  by: string;
  /** Epoch ms at which it ends. */
  until: number;
  key: string;
  /** Who may revoke it, and whose signature a revocation needs: the policy's, as when the grant was given. */
  approvers: Subjects;
  decisionKeys?: readonly string[];
  /** The policy it was given under: a suspension of that policy ends it. */
  policy?: { namespace?: string; name: string };
}

/** What a held statement offers a grant: the key later statements must match, and the longest grant allowed. */
export interface GrantScope {
  key: string;
  maxMs: number;
  fingerprint: string;
}

/**
 * The grant key of a statement held for review, or undefined when no grant may cover it (see above). `fingerprint`
 * is undefined for SQL that does not normalize.
 */
export function grantKey(
  policy: { namespace?: string; name: string; hash: string },
  d: Decision,
  identity: Identity,
  fingerprint: string | undefined,
  /** Every operation each statement performs (the analysis's `kinds`), in statement order. */
  kinds: readonly (readonly string[])[],
): string | undefined {
  if (fingerprint === undefined || d.statements.length === 0 || kinds.length !== d.statements.length) return undefined;
  // A constant decides what these do: a DO block's body, the setting a set_config() or SET names.
  if (kinds.some((k) => k.includes('do') || k.includes('set'))) return undefined;
  return JSON.stringify([
    policy.namespace ?? '',
    policy.name,
    policy.hash,
    d.rule ?? '',
    identity.namespace ?? '',
    identity.serviceAccount ?? '',
    identity.user ?? '',
    identity.issuer ?? '',
    fingerprint,
    d.statements.map((s, i) => [s.kind, kinds[i], s.rule ?? '', s.tables, s.functions]),
  ]);
}

/** A grant at most this many are kept per sidecar; the one ending first goes when another comes. */
const MAX_GRANTS = 1024;

/** The grants one sidecar holds (in memory: a restart ends them, and the agent asks again). */
export class ApprovalGrants {
  private readonly byKey = new Map<string, Grant>();
  private readonly byId = new Map<string, Grant>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly max = MAX_GRANTS,
  ) {}

  /** The live grant covering `key`, if any. */
  find(key: string): Grant | undefined {
    const g = this.byKey.get(key);
    if (g && g.until <= this.now()) {
      this.remove(g);
      return undefined;
    }
    return g;
  }

  add(g: Grant): void {
    const prev = this.byKey.get(g.key);
    if (prev) this.remove(prev);
    if (this.byKey.size >= this.max) {
      let first: Grant | undefined;
      for (const x of this.byKey.values()) if (!first || x.until < first.until) first = x;
      if (first) this.remove(first);
    }
    this.byKey.set(g.key, g);
    this.byId.set(g.id, g);
  }

  /** Ends grant `id`; returns it if it was live. */
  revoke(id: string): Grant | undefined {
    const g = this.byId.get(id);
    if (!g) return undefined;
    this.remove(g);
    return g.until > this.now() ? g : undefined;
  }

  /** Ends every grant given under `policy` (it was suspended); returns them. */
  endPolicy(policy: { namespace?: string; name: string }): Grant[] {
    const ended: Grant[] = [];
    for (const g of [...this.byId.values()]) {
      if (g.policy?.name !== policy.name || (g.policy.namespace ?? '') !== (policy.namespace ?? '')) continue;
      this.remove(g);
      ended.push(g);
    }
    return ended;
  }

  get(id: string): Grant | undefined {
    return this.byId.get(id);
  }

  /** The ids of live grants (to read back their revocations after a reconnect). */
  ids(): string[] {
    const now = this.now();
    const out: string[] = [];
    for (const g of [...this.byId.values()]) {
      if (g.until <= now) this.remove(g);
      else out.push(g.id);
    }
    return out;
  }

  get size(): number {
    return this.byKey.size;
  }

  private remove(g: Grant): void {
    if (this.byKey.get(g.key) === g) this.byKey.delete(g.key);
    this.byId.delete(g.id);
  }
}
