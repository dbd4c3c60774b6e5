import { type AuditEvent, indexedFields } from '../event.js';

/** Filters a live-tail client may set; every given field must match. */
export interface LiveFilter {
  namespace?: string;
  policy?: string;
  identity?: string;
  decision?: string;
  kind?: string;
  type?: string;
  table?: string;
  session?: string;
  /** A reader's scope: only events of these namespaces (absent: all). Not a query parameter. */
  namespaces?: ReadonlySet<string>;
}

export const LIVE_FILTER_KEYS = [
  'namespace',
  'policy',
  'identity',
  'decision',
  'kind',
  'type',
  'table',
  'session',
] as const;

export function liveFilterFrom(params: URLSearchParams): LiveFilter {
  const f: LiveFilter = {};
  for (const k of LIVE_FILTER_KEYS) {
    const v = params.get(k);
    if (v) f[k] = v;
  }
  return f;
}

export function matchesFilter(e: AuditEvent, f: LiveFilter): boolean {
  const x = indexedFields(e);
  if (f.namespace !== undefined && x.namespace !== f.namespace) return false;
  if (
    f.namespaces !== undefined &&
    (x.namespace === null || x.namespace === undefined || !f.namespaces.has(x.namespace))
  )
    return false;
  if (f.policy !== undefined && x.policy !== f.policy) return false;
  if (f.identity !== undefined && x.identity !== f.identity) return false;
  if (f.decision !== undefined && x.decision !== f.decision) return false;
  if (f.kind !== undefined && x.kind !== f.kind) return false;
  if (f.type !== undefined && e.type !== f.type) return false;
  if (f.table !== undefined && !x.tables.includes(f.table)) return false;
  if (f.session !== undefined && e.session.id !== f.session) return false;
  return true;
}
