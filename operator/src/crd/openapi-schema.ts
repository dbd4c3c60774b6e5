/**
 * Converts the policy package's JSON Schemas (ajv dialect) into Kubernetes structural OpenAPI v3 schemas.
 * https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
 * - `additionalProperties: false` is dropped (unknown fields are pruned by the API server instead);
 * - `propertyNames` has no OpenAPI equivalent and becomes a CEL rule over the map's keys;
 * - any keyword this converter does not know fails generation, so a schema change cannot silently drop a bound.
 */

import { CrdSchemaError } from '../errors.js';

export type Schema = Record<string, any>;

const PASS_THROUGH = new Set([
  'type',
  'description',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'minItems',
  'maxItems',
  'maxProperties',
  'minProperties',
  'enum',
  'default',
  'required',
  'format',
]);

export interface CelRule {
  rule: string;
  message: string;
  fieldPath?: string;
}

/** Extra Kubernetes-only annotations keyed by a JSON-pointer-like path ('' = root, '/rules/*' = items of rules). */
export interface Extensions {
  rules?: Record<string, CelRule[]>;
  listMapKeys?: Record<string, string[]>;
}

export { CrdSchemaError };

export function toStructural(schema: Schema, ext: Extensions = {}, path = ''): Schema {
  const out: Schema = {};
  const rules: CelRule[] = [...(ext.rules?.[path] ?? [])];
  for (const [k, v] of Object.entries(schema)) {
    if (PASS_THROUGH.has(k)) out[k] = structuredClone(v);
    else if (k === 'properties') {
      out.properties = {};
      for (const [name, sub] of Object.entries(v as Record<string, Schema>))
        out.properties[name] = toStructural(sub, ext, `${path}/${name}`);
    } else if (k === 'items') out.items = toStructural(v, ext, `${path}/*`);
    else if (k === 'additionalProperties') {
      if (v === false) continue;
      out.additionalProperties = toStructural(v, ext, `${path}/{}`);
    } else if (k === 'propertyNames') {
      const conds = [
        v.maxLength !== undefined ? `size(k) <= ${v.maxLength}` : '',
        v.pattern !== undefined ? `k.matches(${celString(v.pattern)})` : '',
      ].filter(Boolean);
      if (conds.length)
        rules.push({
          rule: `self.all(k, ${conds.join(' && ')})`,
          message: `invalid key: keys must match ${v.pattern ?? 'the key format'}`,
        });
    } else if (k === 'const') out.enum = [v];
    else throw new CrdSchemaError(`unsupported JSON Schema keyword "${k}" at ${path || '/'}`);
  }
  if (out.type === 'array' && ext.listMapKeys?.[path]) {
    out['x-kubernetes-list-type'] = 'map';
    out['x-kubernetes-list-map-keys'] = ext.listMapKeys[path];
  } else if (out.type === 'array' && out.items?.enum) {
    out['x-kubernetes-list-type'] = 'set';
  }
  if (rules.length) out['x-kubernetes-validations'] = rules;
  return out;
}

/** A CEL string literal. */
function celString(s: string): string {
  return `'${s.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}
