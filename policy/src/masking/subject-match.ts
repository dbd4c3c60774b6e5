import { wildcardMatch } from '../engine/glob.js';

/** The session identity fields that `unmaskedFor` can name (a subset of the proxy's Identity). */
export interface MaskingSubject {
  namespace?: string;
  serviceAccount?: string;
  user?: string;
  groups: readonly string[];
}

export interface SubjectList {
  groups?: readonly string[];
  serviceAccounts?: readonly string[];
  users?: readonly string[];
}

/**
 * True when the subject has ANY listed group, service account (`name` or `namespace/name`) or user. Matched exactly
 * (case-sensitive globs), as DatabaseAccessPolicy `subjects` and approvers are: `unmaskedFor` lifts masking, so a
 * looser match would unmask a group `Compliance` or a user `AUDITOR-1` that the rule never named. (Table and
 * column globs stay case-insensitive: there a looser match masks more.)
 */
export function subjectMatches(list: SubjectList | undefined, s: MaskingSubject): boolean {
  if (!list) return false;
  if (list.groups?.some((g) => s.groups.some((have) => wildcardMatch(g, have)))) return true;
  if (s.serviceAccount && list.serviceAccounts) {
    const full = s.namespace ? `${s.namespace}/${s.serviceAccount}` : s.serviceAccount;
    for (const sa of list.serviceAccounts) {
      if (sa.includes('/') ? wildcardMatch(sa, full) : wildcardMatch(sa, s.serviceAccount)) return true;
    }
  }
  return Boolean(s.user && list.users?.some((u) => wildcardMatch(u, s.user as string)));
}
