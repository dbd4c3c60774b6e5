import { sameIdentity } from '../engine/identity-fold.js';

/** An identity provider's user, as the sidecar records it: the token's `iss` and its username claim (`sub` by default). */
export interface OidcSubject {
  issuer: string;
  subject: string;
}

/**
 * Who an approver is, beyond the name their token file gives them: the identities they also hold (the collector's
 * approvers file `oidc` and `serviceAccounts`, and the OIDC token they signed in with), so that a request those
 * identities made is known to be their own. A decision message's `by` carries them to the sidecar.
 */
export interface ApproverIdentity {
  name: string;
  oidc?: readonly OidcSubject[];
  /** `namespace/name` of Kubernetes service accounts whose workloads this approver runs or is. */
  serviceAccounts?: readonly string[];
}

const sameIssuer = (a: string, b: string) => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

/** `ana` of `ana@example.com`; the name itself when it is no address. */
const localPart = (name: string) => (name.lastIndexOf('@') > 0 ? name.slice(0, name.lastIndexOf('@')) : name);

/**
 * The four-eyes rule, one implementation for the collector (before it publishes a decision or revocation) and the
 * sidecar (before it applies a decision: the check that counts, since the statement runs there).
 *
 * Why `approver` may not decide a statement that `identity` (the approval request's: namespace, serviceAccount, pod,
 * user, groups, issuer) asked for, or undefined when the approver is someone else (four eyes). Compared are the
 * approver's name and the OIDC subjects and service accounts the approvers file binds to them, with the requester's
 * authenticated fields: `issuer` + `user` (OIDC mode) and `namespace` + `serviceAccount` (the pod). Fails closed:
 * names that can pass for one another (sameIdentity, as deny rules compare them: case, accents, look-alike letters, `+tag`, Gmail's dots) or differ in an `@domain` count as the same person,
 * the same subject at another issuer might be, a request whose identity fields are not strings is nobody's to
 * approve, and one that names no service account is not for an approver bound to service accounts.
 */
export function selfApprovalReason(identity: object, approver: ApproverIdentity): string | undefined {
  // `object`: the sidecar's Identity as it is, or the collector's parsed request, whose fields are not checked yet.
  const field = (k: string) => (identity as Record<string, unknown>)[k];
  for (const k of ['user', 'issuer', 'namespace', 'serviceAccount'])
    if (field(k) !== undefined && typeof field(k) !== 'string')
      return `the request's identity.${k} is not a string, so whether ${approver.name} asked for it cannot be told`;
  const user = (field('user') as string | undefined) || undefined;
  const issuer = (field('issuer') as string | undefined) ?? '';
  const namespace = field('namespace') as string | undefined;
  const serviceAccount = (field('serviceAccount') as string | undefined) || undefined;
  const accounts = approver.serviceAccounts ?? [];
  if (serviceAccount) {
    const sa = `${namespace ?? ''}/${serviceAccount}`.toLowerCase();
    if (accounts.some((s) => s.toLowerCase() === sa))
      return `${approver.name} holds service account ${sa}, which asked for this statement`;
  } else if (accounts.length > 0) {
    // A pod whose service account is not known (a sidecar outside Kubernetes) may run as one of the approver's.
    return `the request names no service account, so whether it came from one of ${approver.name}'s cannot be told`;
  }
  if (!user) return undefined;
  for (const b of approver.oidc ?? []) {
    if (!sameIdentity(b.subject, user)) continue;
    return sameIssuer(b.issuer, issuer)
      ? `${approver.name} is ${user} at ${issuer || 'the identity provider'}, who asked for this statement`
      : `${approver.name} is ${b.subject} at ${b.issuer}, and ${user} at ${issuer || 'an unnamed issuer'} asked for this statement: the same subject at another issuer may be the same person`;
  }
  if (
    sameIdentity(approver.name, user) ||
    sameIdentity(localPart(approver.name), localPart(user)) ||
    (approver.oidc ?? []).some((b) => sameIdentity(localPart(b.subject), localPart(user)))
  )
    return `${approver.name} asked for this statement as ${user}, or a name that can pass for it`;
  return undefined;
}
