import {
  ACTIONS,
  DANGEROUS_CATEGORIES,
  duration,
  k8sName,
  labelSelector,
  objectGlob,
  STATEMENT_KINDS,
  secretKey,
  secretKeyRef,
  subjects,
} from './schema-parts.js';
import type { FromSchema } from './schema-types.js';

const rule = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'action'],
  description:
    'A rule matches a statement when every listed condition covers the whole statement: all its kinds, all ' +
    'relations it touches, all functions it calls, and the session subject. First match wins.',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 63, pattern: '^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$' },
    description: { type: 'string', maxLength: 1024 },
    action: { type: 'string', enum: ACTIONS },
    statements: {
      type: 'array',
      maxItems: STATEMENT_KINDS.length,
      items: { type: 'string', enum: STATEMENT_KINDS },
      description: 'Statement kinds this rule covers; absent = any kind.',
    },
    tables: {
      type: 'array',
      maxItems: 128,
      items: objectGlob,
      description: 'Globs over schema.relation; absent = any relation.',
    },
    functions: {
      type: 'array',
      maxItems: 128,
      items: objectGlob,
      description: 'Globs over schema.function; absent = any function (the dangerous list still applies).',
    },
    subjects,
    allowDangerous: {
      type: 'array',
      maxItems: DANGEROUS_CATEGORIES.length,
      items: { type: 'string', enum: DANGEROUS_CATEGORIES },
      description: 'Dangerous operation categories an allow/dryrun/review rule may let through.',
    },
  },
} as const;

export const databaseAccessPolicySpecSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['database'],
  properties: {
    podSelector: { ...labelSelector, default: {} },
    database: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'name'],
      properties: {
        host: { type: 'string', minLength: 1, maxLength: 253 },
        port: { type: 'integer', minimum: 1, maximum: 65535, default: 5432 },
        name: { type: 'string', minLength: 1, maxLength: 63 },
        sslMode: { type: 'string', enum: ['disable', 'require', 'verify-ca', 'verify-full'], default: 'verify-full' },
        channelBinding: { type: 'string', enum: ['disable', 'prefer', 'require'], default: 'prefer' },
        caSecretRef: secretKeyRef,
        credentialsSecretRef: {
          type: 'object',
          additionalProperties: false,
          required: ['name'],
          description: 'Secret holding the upstream login; mounted into the sidecar container only.',
          properties: {
            name: k8sName,
            usernameKey: { ...secretKey, default: 'username' },
            passwordKey: { ...secretKey, default: 'password' },
          },
        },
      },
    },
    listen: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { port: { type: 'integer', minimum: 1, maximum: 65535, default: 5432 } },
    },
    authentication: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        mode: { type: 'string', enum: ['workload', 'oidc'], default: 'workload' },
        oidc: {
          type: 'object',
          additionalProperties: false,
          required: ['issuer', 'audience'],
          properties: {
            issuer: { type: 'string', minLength: 1, maxLength: 2048, pattern: '^https://' },
            audience: { type: 'string', minLength: 1, maxLength: 256 },
            groupsClaim: { type: 'string', minLength: 1, maxLength: 256, default: 'groups' },
            usernameClaim: { type: 'string', minLength: 1, maxLength: 256, default: 'sub' },
            jwksUri: { type: 'string', minLength: 1, maxLength: 2048, pattern: '^https://' },
            algorithms: {
              type: 'array',
              minItems: 1,
              maxItems: 8,
              items: {
                type: 'string',
                enum: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'],
              },
              default: ['RS256', 'ES256'],
            },
            clockSkew: { ...duration, default: '30s' },
            maxTokenLifetime: {
              ...duration,
              description:
                "Longest token lifetime accepted (exp - iat; exp - now for a token without iat); a longer-lived token is refused (28P01). Default: the sidecar's --oidc-max-token-lifetime, 24h.",
            },
            endSessionAtExpiry: {
              type: 'boolean',
              default: false,
              description:
                'End a session when the token it logged in with expires (plus clockSkew): at once when idle, else when the statement in flight completes (an open transaction is rolled back). Default: the token is checked at login only, as PostgreSQL checks a password.',
            },
          },
        },
      },
    },
    role: {
      type: 'string',
      minLength: 1,
      maxLength: 63,
      description: 'PostgreSQL role set after connecting (SET ROLE); the agent can never change it.',
    },
    rolloutStrategy: {
      type: 'string',
      enum: ['Workload', 'None'],
      // No schema default on purpose: the API server would write it into every object, and the operator's own
      // default (--rollout-strategy, Workload) and the older pgwarden.dev/rollout-strategy annotation would then
      // never apply.
      description:
        'Workload: the operator rolls selected workloads when their sidecar changes shape; None: it never restarts ' +
        'pods (the sidecar still hot-reloads policy content). Unset: the annotation pgwarden.dev/rollout-strategy, ' +
        "then the operator's default (Workload).",
    },
    // No schema default on purpose: rendered policies carry the field only when it is set, so sidecars older than
    // it keep accepting every policy that does not use it.
    suspend: {
      type: 'boolean',
      description:
        'The kill switch: true refuses new sessions (FATAL 28000) and ends open ones at once, cancelling what they run (FATAL 57P01, their transactions rolled back), as pg_terminate_backend would. False again lets agents back in.',
    },
    // No schema default, like suspend: rendered policies carry it only when set, so older sidecars accept the rest.
    liveControl: {
      type: 'object',
      additionalProperties: false,
      properties: {
        failMode: {
          type: 'string',
          enum: ['closed', 'open'],
          description:
            'What a sidecar auditing to NATS does with a login while it has not yet read back whether this policy is suspended live (NATS unreachable since it started). closed (the default when unset): the login waits up to 5 s, then is refused with FATAL 57P03 until the state is known; open: after 5 s it is let in, and spec.suspend is the only switch until NATS answers.',
        },
      },
    },
    defaultAction: { type: 'string', enum: ACTIONS, default: 'deny' },
    rules: { type: 'array', maxItems: 256, items: rule, default: [] },
    guardrails: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        blockDDL: { type: 'boolean', default: true },
        requireWhere: {
          type: 'array',
          maxItems: 2,
          items: { type: 'string', enum: ['update', 'delete'] },
          default: ['update', 'delete'],
        },
        maxRowsReturned: { type: 'integer', minimum: 0, maximum: 1_000_000_000, default: 0, description: '0 = no cap' },
        statementTimeout: { ...duration, description: 'Set upstream and enforced by the proxy.' },
        // No schema default: rendered policies carry it only when set (older sidecars keep accepting the rest).
        maxRowsAffected: {
          type: 'integer',
          minimum: 1,
          maximum: 1_000_000_000,
          description:
            'Rows one statement may change, counting what its triggers, foreign-key cascades and functions change: the proxy runs each write (and each call of a user-defined function, CALL or DO) so that it can be undone, and one that changes more is rolled back and fails with 54000. COPY FROM is denied.',
        },
        blockedFunctions: { type: 'array', maxItems: 256, items: objectGlob, default: [] },
        maxConnections: {
          type: 'integer',
          minimum: 0,
          maximum: 100_000,
          default: 0,
          description:
            '0 = no cap. Client connections the sidecar serves at once for this policy; the next one gets FATAL 53300 (too_many_connections), as from PostgreSQL.',
        },
        rateLimit: {
          type: 'object',
          additionalProperties: false,
          required: ['statementsPerSecond'],
          description:
            'Statements per second this listener runs for all its sessions together (a token bucket); transaction control is never limited. Past it a statement is denied (53400) or, with onExceed: delay, waits up to maxDelay.',
          properties: {
            statementsPerSecond: { type: 'number', minimum: 0.001, maximum: 1_000_000 },
            burst: {
              type: 'integer',
              minimum: 1,
              maximum: 1_000_000,
              description:
                'Statements that may run at once after a quiet spell. Default: statementsPerSecond rounded up.',
            },
            onExceed: { type: 'string', enum: ['deny', 'delay'], default: 'deny' },
            scope: {
              type: 'string',
              enum: ['pod', 'policy'],
              default: 'pod',
              description:
                'pod: each pod (sidecar) has the whole budget. policy: the budget is shared by every pod serving the policy, split evenly among those running (they find each other over the audit NATS connection).',
            },
            maxDelay: {
              ...duration,
              default: '5s',
              description:
                'onExceed: delay: the longest a statement waits for its turn; one that would wait longer is denied.',
            },
          },
        },
      },
    },
    approval: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        timeout: { ...duration, default: '10m' },
        approvers: { ...subjects, default: {} },
        decisionKeys: {
          type: 'array',
          maxItems: 4,
          default: [],
          description:
            'Ed25519 public keys (PEM) of the collector(s) allowed to sign decisions; when set, unsigned decisions are ignored. Several for rotation.',
          items: { type: 'string', maxLength: 1024, pattern: '^-----BEGIN PUBLIC KEY-----' },
        },
        grants: {
          type: 'object',
          additionalProperties: false,
          required: ['maxDuration'],
          description:
            'Lets an approver approve, with one decision, later statements of the same shape (same fingerprint, relations and functions) under the same rule from the same identity, in the pod that held the first, for up to maxDuration. Absent: every held statement needs its own approval.',
          properties: {
            maxDuration: {
              ...duration,
              description: 'The longest grant an approver may give (at most 24h); a longer one is shortened to it.',
            },
          },
        },
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        captureResults: { type: 'string', enum: ['none', 'summary', 'rows'], default: 'summary' },
        maxResultBytes: { type: 'integer', minimum: 0, maximum: 16_777_216, default: 65536 },
        captureParams: { type: 'boolean', default: false },
        statementText: {
          type: 'string',
          enum: ['full', 'normalized'],
          default: 'full',
          description:
            'normalized: audit events record each statement with its constants replaced by $n (as pg_stat_statements shows it), so values in WHERE clauses and VALUES lists are not kept; unparseable text is recorded as a placeholder. Statements then also carry statement.fingerprint.',
        },
        fingerprint: {
          type: 'boolean',
          default: false,
          description:
            'With statementText full: also record statement.fingerprint (the first 16 hex digits of the SHA-256 of the normalized text), shared by statements that differ only in constants. Costs a normalization per distinct statement text and grows the parser heap; normalized text always has it.',
        },
        failMode: { type: 'string', enum: ['closed', 'open'], default: 'closed' },
      },
    },
    masking: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        lineage: {
          type: 'string',
          enum: ['strict', 'direct'],
          default: 'strict',
          description:
            'strict: any output column derived from a masked column is masked (unresolvable lineage masks the ' +
            'column); direct: only plain references to a masked column are masked.',
        },
        maskedColumnPredicates: {
          type: 'string',
          enum: ['allow', 'deny'],
          default: 'deny',
          description: 'deny: statements that filter, join, group or sort on a masked column are denied.',
        },
        undecidableLineage: {
          type: 'string',
          enum: ['mask', 'deny'],
          default: 'mask',
          description:
            'mask: output columns whose origin cannot be traced (user functions, unknown relations) are masked; ' +
            'deny: statements with such columns are denied.',
        },
      },
    },
  },
} as const;

export type DatabaseAccessPolicySpec = FromSchema<typeof databaseAccessPolicySpecSchema>;
export type PolicyRule = DatabaseAccessPolicySpec['rules'][number];
export type Guardrails = DatabaseAccessPolicySpec['guardrails'];
export type Subjects = NonNullable<PolicyRule['subjects']>;
export type StatementKind = (typeof STATEMENT_KINDS)[number];
export type PolicyAction = (typeof ACTIONS)[number];
export type DangerousCategory = (typeof DANGEROUS_CATEGORIES)[number];
