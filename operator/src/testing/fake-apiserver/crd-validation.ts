/**
 * What a real API server does to a custom resource before storing it, per its CRD's structural schema
 * (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/): prune fields
 * the schema does not declare, apply `default`s, then validate: OpenAPI keywords (types, required, enums, bounds,
 * patterns), list types (`x-kubernetes-list-type: map | set` entries must be unique) and the CEL rules of
 * `x-kubernetes-validations` (evaluated with a real CEL implementation, `self` bound to the node). Failures become
 * the same 422 `Invalid` Status with one cause per field. Without it, a test could store a policy the cluster would
 * refuse, or read back a status field the cluster would have pruned.
 *
 * Not modelled: transition rules (`oldSelf`), `messageExpression`, CEL cost limits, ratcheting, `fieldValidation=Strict`
 * (unknown fields are pruned silently, as with the default `Warn` minus the warning header).
 */
import { parse as parseCel } from '@marcbachmann/cel-js';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { Json } from './field-ownership.js';

export interface FieldCause {
  reason: string;
  message: string;
  field: string;
}

interface CelRule {
  rule: string;
  message?: string;
  messageExpression?: string;
}

/** A CRD version's schema, ready to check objects of its kind. */
export class CrdSchema {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  private readonly schema: Json;
  private readonly ajvValidate: ValidateFunction;
  private readonly cel = new Map<string, ReturnType<typeof parseCel>>();

  /** `crd`: an apiextensions.k8s.io/v1 CustomResourceDefinition; `version`: one of its versions (default: storage). */
  constructor(crd: Json, version?: string) {
    const v = (crd.spec.versions as Json[]).find((x) => (version ? x.name === version : x.storage));
    if (!v?.schema?.openAPIV3Schema) throw new Error(`CRD ${crd.metadata?.name}: no schema for version ${version}`);
    this.group = crd.spec.group;
    this.version = v.name;
    this.kind = crd.spec.names.kind;
    this.plural = crd.spec.names.plural;
    this.schema = v.schema.openAPIV3Schema;
    // Formats (date-time) are not checked, as the API server's structural validation mostly does not; logger off so
    // ajv does not warn about them once per fake server.
    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false, logger: false });
    for (const k of [
      'x-kubernetes-validations',
      'x-kubernetes-list-type',
      'x-kubernetes-list-map-keys',
      'x-kubernetes-preserve-unknown-fields',
      'x-kubernetes-int-or-string',
      'x-kubernetes-embedded-resource',
      'x-kubernetes-map-type',
    ])
      ajv.addKeyword(k);
    this.ajvValidate = ajv.compile(this.schema);
    // CEL rules compile when the CRD is created (a real API server refuses a CRD whose rules do not compile).
    walkRules(this.schema, (r) => this.compile(r.rule));
  }

  /** Prunes and defaults `obj` in place (as the API server does before storing it), then returns what is invalid. */
  admit(obj: Json): FieldCause[] {
    prune(obj, this.schema, true);
    applyDefaults(obj, this.schema);
    const causes: FieldCause[] = [];
    if (!this.ajvValidate(obj)) for (const e of this.ajvValidate.errors ?? []) causes.push(causeOf(e, obj));
    this.checkNode(obj, this.schema, '', causes);
    return causes;
  }

  private compile(rule: string): ReturnType<typeof parseCel> {
    let fn = this.cel.get(rule);
    if (!fn) {
      fn = parseCel(rule);
      this.cel.set(rule, fn);
    }
    return fn;
  }

  /** List types and CEL rules, depth first (a node's rules run only where its value has the declared type). */
  private checkNode(value: unknown, schema: Json, path: string, causes: FieldCause[]): void {
    if (value === undefined || value === null || !hasType(value, schema.type)) return;
    if (Array.isArray(value)) {
      const listType = schema['x-kubernetes-list-type'];
      if (listType === 'map' || listType === 'set') {
        const keys = schema['x-kubernetes-list-map-keys'] as string[] | undefined;
        const seen = new Set<string>();
        value.forEach((item, i) => {
          // A set item is its own key; a map item is identified by its key fields (shown as the API server does).
          const key = JSON.stringify(
            listType === 'set' ? item : Object.fromEntries((keys ?? []).map((k) => [k, item?.[k]])),
          );
          if (seen.has(key))
            causes.push({ reason: 'FieldValueDuplicate', message: `Duplicate value: ${key}`, field: `${path}[${i}]` });
          seen.add(key);
        });
      }
      if (schema.items)
        for (let i = 0; i < value.length; i++) this.checkNode(value[i], schema.items, `${path}[${i}]`, causes);
    } else if (typeof value === 'object') {
      const o = value as Record<string, unknown>;
      for (const [k, s] of Object.entries<Json>(schema.properties ?? {}))
        this.checkNode(o[k], s, path ? `${path}.${k}` : k, causes);
      if (typeof schema.additionalProperties === 'object')
        for (const [k, v] of Object.entries(o)) this.checkNode(v, schema.additionalProperties, `${path}[${k}]`, causes);
    }
    for (const r of (schema['x-kubernetes-validations'] ?? []) as CelRule[]) {
      let ok: unknown;
      let failure: string | undefined;
      try {
        ok = this.compile(r.rule)({ self: value });
      } catch (err) {
        failure = `${(err as Error).message.split('\n')[0]} evaluating rule: ${r.rule}`;
      }
      if (failure === undefined && ok === true) continue;
      const message = failure ?? r.message ?? `failed rule: ${r.rule}`;
      causes.push({
        reason: 'FieldValueInvalid',
        message: `Invalid value: "${typeName(value)}": ${message}`,
        field: path,
      });
    }
  }
}

/** The 422 a real API server answers with: `<Kind>.<group> "<name>" is invalid: <field>: <message>[, …]`. */
export function invalidStatusMessage(schema: CrdSchema, name: string, causes: FieldCause[]): string {
  const parts = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message));
  const list = parts.length === 1 ? parts[0] : `[${parts.join(', ')}]`;
  return `${schema.kind}.${schema.group} "${name}" is invalid: ${list}`;
}

function walkRules(schema: Json, visit: (r: CelRule) => void): void {
  for (const r of (schema['x-kubernetes-validations'] ?? []) as CelRule[]) visit(r);
  for (const s of Object.values<Json>(schema.properties ?? {})) walkRules(s, visit);
  if (schema.items) walkRules(schema.items, visit);
  if (typeof schema.additionalProperties === 'object') walkRules(schema.additionalProperties, visit);
}

/** Drops fields the schema does not declare. The root's apiVersion, kind and metadata are the API server's own. */
function prune(value: unknown, schema: Json, root = false): void {
  if (value === null || typeof value !== 'object' || schema['x-kubernetes-preserve-unknown-fields']) return;
  if (Array.isArray(value)) {
    if (schema.items) for (const item of value) prune(item, schema.items);
    return;
  }
  const o = value as Record<string, unknown>;
  if (schema.properties) {
    for (const k of Object.keys(o)) {
      if (root && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
      const s = schema.properties[k];
      if (s) prune(o[k], s);
      else if (typeof schema.additionalProperties !== 'object') delete o[k];
    }
  } else if (typeof schema.additionalProperties === 'object') {
    for (const v of Object.values(o)) prune(v, schema.additionalProperties);
  }
}

/** Sets absent fields that have a `default`, where their parent object is present. */
function applyDefaults(value: unknown, schema: Json): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    if (schema.items) for (const item of value) applyDefaults(item, schema.items);
    return;
  }
  const o = value as Record<string, unknown>;
  for (const [k, s] of Object.entries<Json>(schema.properties ?? {})) {
    if (o[k] === undefined && s.default !== undefined) o[k] = structuredClone(s.default);
    applyDefaults(o[k], s);
  }
  if (typeof schema.additionalProperties === 'object')
    for (const v of Object.values(o)) applyDefaults(v, schema.additionalProperties);
}

function hasType(value: unknown, type: string | undefined): boolean {
  switch (type) {
    case 'object':
      return typeof value === 'object' && !Array.isArray(value);
    case 'array':
      return Array.isArray(value);
    case 'string':
      return typeof value === 'string';
    case 'integer':
      return Number.isInteger(value);
    case 'number':
      return typeof value === 'number';
    case 'boolean':
      return typeof value === 'boolean';
    default:
      return true;
  }
}

function typeName(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  if (Number.isInteger(value)) return 'integer';
  return typeof value;
}

/** An ajv error as the API server words the same failure (field path with dots and [i]). */
function causeOf(e: ErrorObject, obj: Json): FieldCause {
  const segments = e.instancePath.split('/').slice(1).map(unescapePointer);
  let value: unknown = obj;
  for (const s of segments) value = (value as Record<string, unknown> | undefined)?.[s];
  const field = segments.reduce((p, s) => (/^\d+$/.test(s) ? `${p}[${s}]` : p ? `${p}.${s}` : s), '');
  const shown = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value ?? null);
  switch (e.keyword) {
    case 'required': {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      return {
        reason: 'FieldValueRequired',
        message: 'Required value',
        field: field ? `${field}.${missing}` : missing,
      };
    }
    case 'type':
      return {
        reason: 'FieldValueTypeInvalid',
        message: `Invalid value: "${typeName(value)}": ${field} in body must be of type ${(e.params as { type: string }).type}: "${typeName(value)}"`,
        field,
      };
    case 'enum':
      return {
        reason: 'FieldValueNotSupported',
        message: `Unsupported value: ${shown}: supported values: ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`,
        field,
      };
    default:
      return { reason: 'FieldValueInvalid', message: `Invalid value: ${shown}: ${field} in body ${e.message}`, field };
  }
}

function unescapePointer(s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~');
}
