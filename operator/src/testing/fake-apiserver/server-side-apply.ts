import {
  deepEqual,
  deleteAt,
  getAt,
  type Json,
  leafPaths,
  type ManagerEntry,
  type Path,
  pathKey,
  setAt,
} from './field-ownership.js';
import { ApiError } from './resource-types.js';

/**
 * The merge step of server-side apply (https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts):
 * a field another manager owns with a different value is a conflict (409) unless force; fields this applier owned
 * before and no longer applies are removed unless someone else owns them; applied fields are set.
 * `scope` is the applied configuration restricted to what the endpoint may change (spec or status).
 */
export function mergeApplied(
  current: Json,
  managers: ManagerEntry[],
  applied: Json,
  scope: Json,
  opts: { fieldManager?: string; subresource?: string; force?: boolean },
): { next: Json; paths: Path[] } {
  const paths = leafPaths(scope);
  const conflicts: string[] = [];
  for (const m of managers) {
    if (m.manager === opts.fieldManager) continue;
    for (const p of paths) {
      if (m.fields.has(pathKey(p)) && !deepEqual(getAt(current, p), getAt(applied, p))) {
        conflicts.push(`conflict with "${m.manager}": .${p.join('.')}`);
      }
    }
  }
  if (conflicts.length && !opts.force) {
    throw new ApiError(409, 'Conflict', `Apply failed with ${conflicts.length} conflict(s): ${conflicts.join(', ')}`);
  }
  const next = structuredClone(current);
  const mine = managers.find(
    (m) => m.manager === opts.fieldManager && m.operation === 'Apply' && m.subresource === opts.subresource,
  );
  const nowOwned = new Set(paths.map(pathKey));
  for (const k of mine?.fields ?? []) {
    const ownedByOthers = managers.some((m) => m !== mine && m.fields.has(k));
    if (!nowOwned.has(k) && !ownedByOthers) deleteAt(next, JSON.parse(k));
  }
  for (const p of paths) setAt(next, p, getAt(applied, p));
  return { next, paths };
}
