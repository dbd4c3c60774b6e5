/**
 * The validation the real API server applies to ConfigMaps and Secrets (pkg/apis/core/validation:
 * ValidateConfigMap / ValidateConfigMapUpdate, ValidateSecret / ValidateSecretUpdate) that the operator must live with:
 * at most 1 MiB of data (key lengths plus value bytes), and `immutable: true` freezing data, binaryData and the flag
 * itself (only delete and recreate change them). Without these a test of an oversized render or of a frozen ConfigMap
 * would pass against the fake and fail in a cluster.
 */
import type { Json } from './field-ownership.js';
import { deepEqual } from './field-ownership.js';
import { ApiError, type ResourceType } from './resource-types.js';

/** core.MaxSecretSize, which ConfigMaps share. */
export const MAX_CONFIGMAP_DATA_BYTES = 1024 * 1024;

const FROZEN_MESSAGE = 'Forbidden: field is immutable when `immutable` is set';

/** Throws the 422 Invalid the real API server answers a write of `next` (replacing `before`, if any) with. */
export function validateCoreObject(rt: ResourceType, next: Json, before?: Json): void {
  if (rt.group !== '' || (rt.kind !== 'ConfigMap' && rt.kind !== 'Secret')) return;
  const causes: { reason: string; message: string; field: string }[] = [];
  if (before?.immutable === true) {
    if (next.immutable !== true)
      causes.push({ reason: 'FieldValueForbidden', message: FROZEN_MESSAGE, field: 'immutable' });
    for (const f of rt.kind === 'ConfigMap' ? ['data', 'binaryData'] : ['data']) {
      if (!deepEqual(emptyAsUndefined(before[f]), emptyAsUndefined(next[f])))
        causes.push({ reason: 'FieldValueForbidden', message: FROZEN_MESSAGE, field: f });
    }
  }
  const size = dataBytes(rt.kind, next);
  if (size > MAX_CONFIGMAP_DATA_BYTES) {
    causes.push({
      reason: 'FieldValueTooLong',
      message: `Too long: must have at most ${MAX_CONFIGMAP_DATA_BYTES} bytes`,
      // A Secret's error names data; a ConfigMap's names the whole object, which Kubernetes prints as [].
      field: rt.kind === 'Secret' ? 'data' : '[]',
    });
  }
  if (causes.length === 0) return;
  const name = next.metadata?.name ?? '';
  throw new ApiError(
    422,
    'Invalid',
    `${rt.kind} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`,
    { name, kind: rt.kind, causes },
  );
}

/** What counts against the limit: every key's length plus its value's bytes (binary values decoded). */
function dataBytes(kind: string, obj: Json): number {
  let n = 0;
  for (const [k, v] of Object.entries<string>(obj.data ?? {}))
    n += k.length + (kind === 'Secret' ? Buffer.from(v ?? '', 'base64').length : Buffer.byteLength(v ?? ''));
  if (kind === 'ConfigMap')
    for (const [k, v] of Object.entries<string>(obj.binaryData ?? {}))
      n += k.length + Buffer.from(v ?? '', 'base64').length;
  return n;
}

function emptyAsUndefined(v: unknown): unknown {
  return v && typeof v === 'object' && Object.keys(v).length === 0 ? undefined : v;
}
