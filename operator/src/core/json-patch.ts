import { JsonPatchError } from '../errors.js';

/**
 * RFC 6902 JSON Patch, the patch format of AdmissionReview responses (`patchType: JSONPatch`).
 * https://www.rfc-editor.org/rfc/rfc6902 and https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#response
 */

export type JsonPatchOp =
  | { op: 'add'; path: string; value: unknown }
  | { op: 'replace'; path: string; value: unknown }
  | { op: 'remove'; path: string }
  | { op: 'test'; path: string; value: unknown };

export { JsonPatchError };

/** RFC 6901 pointer escaping: `~` → `~0`, `/` → `~1` (annotation keys contain slashes). */
export function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new JsonPatchError(`invalid JSON pointer "${pointer}"`);
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** Applies a patch to a deep copy of `doc`; the input is never modified. Throws JsonPatchError on a bad op. */
export function applyJsonPatch<T>(doc: T, ops: readonly JsonPatchOp[]): T {
  let root: any = structuredClone(doc);
  for (const op of ops) {
    const segs = parsePointer(op.path);
    if (segs.length === 0) {
      if (op.op === 'remove') throw new JsonPatchError('cannot remove the document root');
      if (op.op === 'test') {
        if (JSON.stringify(root) !== JSON.stringify(op.value)) throw new JsonPatchError('test failed at root');
        continue;
      }
      root = structuredClone(op.value);
      continue;
    }
    let parent = root;
    for (const s of segs.slice(0, -1)) {
      const next = Array.isArray(parent) ? parent[Number(s)] : parent?.[s];
      if (typeof next !== 'object' || next === null) throw new JsonPatchError(`path not found: ${op.path}`);
      parent = next;
    }
    const last = segs[segs.length - 1];
    if (Array.isArray(parent)) {
      const idx = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(idx) || idx < 0 || idx > parent.length) throw new JsonPatchError(`bad index: ${op.path}`);
      if (op.op === 'add') parent.splice(idx, 0, structuredClone(op.value));
      else if (idx >= parent.length) throw new JsonPatchError(`index out of range: ${op.path}`);
      else if (op.op === 'replace') parent[idx] = structuredClone(op.value);
      else if (op.op === 'remove') parent.splice(idx, 1);
      else if (JSON.stringify(parent[idx]) !== JSON.stringify(op.value))
        throw new JsonPatchError(`test failed: ${op.path}`);
    } else if (typeof parent === 'object' && parent !== null) {
      if (op.op === 'add') parent[last] = structuredClone(op.value);
      else if (!Object.hasOwn(parent, last)) throw new JsonPatchError(`path not found: ${op.path}`);
      else if (op.op === 'replace') parent[last] = structuredClone(op.value);
      else if (op.op === 'remove') delete parent[last];
      else if (JSON.stringify(parent[last]) !== JSON.stringify(op.value))
        throw new JsonPatchError(`test failed: ${op.path}`);
    } else {
      throw new JsonPatchError(`path not found: ${op.path}`);
    }
  }
  return root as T;
}

/** RFC 7396 JSON Merge Patch (null deletes a key; arrays are replaced). */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const out: any = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}
