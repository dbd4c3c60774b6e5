/**
 * Reusable fragments of the pgwarden.dev/v1alpha1 JSON Schemas. Everything is inline (no `$ref`) and every
 * string and list is bounded, because the CRDs are generated from these objects and Kubernetes structural
 * schemas need bounds for CEL cost estimation and reject `$ref`.
 * https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
 */

/** The statement kinds the analyser reports (see docs/policy-reference.md, "Statement kinds"). */
export const STATEMENT_KINDS = [
  'select',
  'insert',
  'update',
  'delete',
  'merge',
  'copy',
  'ddl',
  'dcl',
  'call',
  'do',
  'transaction',
  'set',
  'show',
  'explain',
  'prepare',
  'execute',
  'deallocate',
  'cursor',
  'lock',
  'listen',
  'notify',
  'discard',
  'maintenance',
  'utility',
] as const;

export const ACTIONS = ['allow', 'deny', 'review', 'dryrun'] as const;

/**
 * Built-in dangerous operations: denied unless the rule that matches a statement names the category in
 * `allowDangerous`. SET ROLE and friends are not here: nothing can allow them.
 */
export const DANGEROUS_CATEGORIES = [
  'server-file-access',
  'large-object-file-io',
  'copy-program',
  'copy-file',
  'dblink',
  'alter-system',
  'signal-backend',
  'server-admin',
  'dynamic-sql',
] as const;

export const DETECTORS = [
  'email',
  'credit-card',
  'us-ssn',
  'phone',
  'iban',
  'jwt',
  'aws-access-key',
  'private-key',
] as const;

export const MASKING_STRATEGIES = ['redact', 'partial', 'hash', 'null', 'email', 'digits'] as const;

/** Kubernetes object name (DNS-1123 subdomain). */
export const k8sName = {
  type: 'string',
  minLength: 1,
  maxLength: 253,
  pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$',
} as const;

/** A Secret data key. https://kubernetes.io/docs/concepts/configuration/secret/#restriction-names-data */
export const secretKey = { type: 'string', minLength: 1, maxLength: 253, pattern: '^[-._a-zA-Z0-9]+$' } as const;

export const secretKeyRef = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'key'],
  properties: { name: k8sName, key: secretKey },
} as const;

/** Go-style duration restricted to whole units: `30s`, `10m`, `1h30m`, `250ms`. */
export const duration = {
  type: 'string',
  minLength: 2,
  maxLength: 32,
  pattern: '^([0-9]{1,9}(ms|s|m|h))+$',
} as const;

/** A glob over `schema.name` (`*` any run of characters, `?` one character). */
export const objectGlob = { type: 'string', minLength: 1, maxLength: 256, pattern: '^[^\\s]+$' } as const;

export const stringList = (maxItems: number, maxLength: number) =>
  ({ type: 'array', maxItems, items: { type: 'string', minLength: 1, maxLength } }) as const;

/** Label keys; checked in validate.ts because CRD schemas have no `propertyNames`. */
export const LABEL_KEY_PATTERN = /^([a-z0-9.-]{1,253}\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** metav1.LabelSelector. https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors */
export const labelSelector = {
  type: 'object',
  additionalProperties: false,
  properties: {
    matchLabels: {
      type: 'object',
      maxProperties: 64,
      additionalProperties: {
        type: 'string',
        maxLength: 63,
        pattern: '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$',
      },
    },
    matchExpressions: {
      type: 'array',
      maxItems: 32,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['key', 'operator'],
        properties: {
          key: { type: 'string', minLength: 1, maxLength: 317 },
          operator: { type: 'string', enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] },
          values: stringList(64, 63),
        },
      },
    },
  },
} as const;

/** Who a rule (or an exemption) applies to. Empty lists mean "anyone" only when the whole block is absent. */
export const subjects = {
  type: 'object',
  additionalProperties: false,
  description:
    'Matches when the session has ANY listed group, service account or user (globs allowed): exactly (case-sensitive), except that a deny rule also matches other spellings of a listed name (case, look-alike letters such as a Cyrillic о or a 0 for an o, user+tag@domain, dots in a Gmail address).',
  properties: {
    groups: stringList(64, 256),
    serviceAccounts: { ...stringList(64, 317), description: '`name` or `namespace/name`, globs allowed' },
    users: {
      ...stringList(64, 256),
      description: 'OIDC user names (the usernameClaim, default `sub`), globs allowed',
    },
  },
} as const;
