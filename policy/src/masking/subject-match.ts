import { globMatches } from './name-glob.js';

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

/** True when the subject has ANY listed group, service account (`name` or `namespace/name`) or user. */
export function subjectMatches(list: SubjectList | undefined, s: MaskingSubject): boolean {
  if (!list) return false;
  if (list.groups?.some((g) => s.groups.some((have) => globMatches(g, have)))) return true;
  if (s.serviceAccount && list.serviceAccounts) {
    const full = s.namespace ? `${s.namespace}/${s.serviceAccount}` : s.serviceAccount;
    for (const sa of list.serviceAccounts) {
      if (sa.includes('/') ? globMatches(sa, full) : globMatches(sa, s.serviceAccount)) return true;
    }
  }
  return Boolean(s.user && list.users?.some((u) => globMatches(u, s.user as string)));
}
