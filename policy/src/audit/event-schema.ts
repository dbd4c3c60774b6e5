import { AUDIT_EVENT_TYPES, WEB_SESSION_END_REASONS } from './event-types.js';

/**
 * JSON Schema (draft-07) of audit event v1: the one description the sidecar, the collector and the tests share.
 * Kept strict (no unknown properties) so a producer bug shows up as a validation failure, not as silent drift;
 * a v2 gets a new `$id` and `v`.
 */

/** RFC 3339 in UTC with exactly six fractional digits, as the sidecar writes it. */
export const AUDIT_TIME_PATTERN = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{6}Z$';
export const AUDIT_HASH_PATTERN = '^[0-9a-f]{64}$';

const str = { type: 'string' } as const;
const strArr = { type: 'array', items: str } as const;
const nonNegInt = { type: 'integer', minimum: 0 } as const;
const nonNegNum = { type: 'number', minimum: 0 } as const;
const time = { type: 'string', pattern: AUDIT_TIME_PATTERN } as const;
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: 'object',
  additionalProperties: false,
  required,
  properties,
});

/** JSON Schema `if`/`then`: when `cond` holds, `required` must be present. */
const requires = (cond: Record<string, unknown>, required: string[]) => ({
  if: cond,
  // biome-ignore lint/suspicious/noThenProperty: `then` is a JSON Schema keyword, not a thenable.
  then: { required },
});

const error = obj({ code: str, message: str }, ['code', 'message']);

export const auditEventSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://pgwarden.dev/schemas/audit-event-v1.json',
  title: 'pgwarden audit event v1',
  type: 'object',
  additionalProperties: false,
  required: ['v', 'type', 'id', 'time', 'session', 'prevHash', 'hash'],
  properties: {
    v: { const: 1 },
    type: { enum: [...AUDIT_EVENT_TYPES] },
    id: { type: 'string', minLength: 3, maxLength: 300 },
    time,
    session: obj({ id: { type: 'string', minLength: 1, maxLength: 256 }, seq: { type: 'integer', minimum: 1 } }, [
      'id',
      'seq',
    ]),
    source: obj({ instance: str, pod: str, namespace: str, version: str }, ['instance']),
    identity: obj(
      { namespace: str, serviceAccount: str, pod: str, node: str, user: str, groups: strArr, issuer: str },
      ['groups'],
    ),
    database: obj({ host: str, port: nonNegInt, name: str, user: str, role: str }, ['host', 'name', 'user']),
    client: obj({ address: str, port: nonNegInt, application: str }, ['address', 'port']),
    statement: obj(
      {
        text: str,
        fingerprint: str,
        kind: str,
        tables: strArr,
        functions: strArr,
        params: { type: 'array', items: { type: ['string', 'null'] } },
        paramFormats: { type: 'array', items: { enum: ['text', 'binary'] } },
        protocol: { enum: ['simple', 'extended'] },
        index: nonNegInt,
        count: { type: 'integer', minimum: 1 },
      },
      ['text', 'tables', 'functions'],
    ),
    decision: obj({ action: { enum: ['allow', 'deny', 'review', 'dryrun'] }, rule: str, reason: str, code: str }, [
      'action',
    ]),
    masking: obj({ columns: strArr, cells: nonNegInt }, ['columns', 'cells']),
    result: obj(
      {
        tag: str,
        rows: nonNegInt,
        bytes: nonNegInt,
        changed: nonNegInt,
        error,
        sample: obj(
          {
            columns: strArr,
            rows: { type: 'array', items: { type: 'array', items: { type: ['string', 'null'] } } },
            truncated: { type: 'boolean' },
          },
          ['columns', 'rows', 'truncated'],
        ),
      },
      ['rows', 'bytes'],
    ),
    timing: obj({ start: time, durationMs: nonNegNum, upstreamMs: nonNegNum, heldMs: nonNegNum }, [
      'start',
      'durationMs',
      'upstreamMs',
      'heldMs',
    ]),
    policy: obj({ name: str, hash: str }, ['name', 'hash']),
    end: obj({ reason: str, error: str, statements: nonNegInt, durationMs: nonNegNum }, ['statements', 'durationMs']),
    approval: obj({ id: str, approver: str, reason: str, expiresAt: time, grantUntil: time }, ['id']),
    gap: obj(
      {
        dropped: nonNegInt,
        since: time,
        until: time,
        cause: str,
        sessions: {
          type: 'array',
          items: obj({ id: str, fromSeq: { type: 'integer', minimum: 1 }, toSeq: { type: 'integer', minimum: 1 } }, [
            'id',
            'fromSeq',
            'toSeq',
          ]),
        },
        truncated: { type: 'boolean' },
      },
      ['dropped', 'since', 'until', 'cause', 'sessions'],
    ),
    error,
    refusal: obj(
      {
        reason: str,
        code: str,
        message: str,
        user: str,
        database: str,
        mode: str,
        repeated: { type: 'integer', minimum: 1 },
        varied: { type: 'boolean' },
      },
      ['reason', 'code'],
    ),
    checkpoint: obj(
      {
        seq: { type: 'integer', minimum: 1 },
        hash: { type: 'string', pattern: AUDIT_HASH_PATTERN },
        key: { type: 'string', pattern: '^[0-9a-f]{16}$' },
        sig: { type: 'string', pattern: '^[A-Za-z0-9+/]{86}==$' },
      },
      ['seq', 'hash', 'key', 'sig'],
    ),
    read: obj(
      {
        reader: { type: 'string', minLength: 1 },
        route: str,
        query: { type: 'object', additionalProperties: str },
        namespaces: strArr,
        oidc: obj({ issuer: str, subject: str }, ['issuer', 'subject']),
        status: { type: 'integer', minimum: 100, maximum: 599 },
        items: nonNegInt,
        reason: { type: 'string', minLength: 1, maxLength: 1024 },
        repeated: { type: 'integer', minimum: 1 },
      },
      ['reader', 'route', 'status'],
    ),
    heads: obj(
      {
        chains: {
          type: 'array',
          minItems: 1,
          items: obj(
            {
              id: { type: 'string', minLength: 1 },
              seq: { type: 'integer', minimum: 1 },
              hash: { type: 'string', pattern: AUDIT_HASH_PATTERN },
            },
            ['id', 'seq', 'hash'],
          ),
        },
        refreshMs: { type: 'integer', minimum: 1 },
      },
      ['chains'],
    ),
    finding: obj(
      {
        kind: { enum: ['audit.gap', 'audit.gap.unattributed', 'audit.tampered'] },
        session: { type: 'string', minLength: 1 },
        seqFrom: { type: 'integer', minimum: 0 },
        seqTo: { type: 'integer', minimum: 0 },
        detail: str,
      },
      ['kind', 'session', 'seqFrom', 'seqTo', 'detail'],
    ),
    control: obj(
      {
        kind: { enum: ['terminate', 'suspend', 'resume'] },
        id: { type: 'string', minLength: 1 },
        by: { type: 'string', minLength: 1 },
        reason: str,
        at: str,
        session: { type: 'string', minLength: 1 },
        policy: obj({ namespace: { type: 'string', minLength: 1 }, name: { type: 'string', minLength: 1 } }, [
          'namespace',
          'name',
        ]),
        signed: { type: 'boolean' },
        sessionsEnded: nonNegInt,
      },
      ['kind', 'id', 'by', 'reason', 'at', 'signed', 'sessionsEnded'],
    ),
    webSession: obj(
      {
        reader: { type: 'string', minLength: 1 },
        oidc: obj({ issuer: str, subject: str }, ['issuer', 'subject']),
        reason: { enum: [...WEB_SESSION_END_REASONS] },
        detail: str,
      },
      ['reader', 'oidc', 'reason', 'detail'],
    ),
    prevHash: { anyOf: [{ type: 'null' }, { type: 'string', pattern: AUDIT_HASH_PATTERN }] },
    hash: { type: 'string', pattern: AUDIT_HASH_PATTERN },
  },
  allOf: [
    // The payload each type must carry; other blocks stay optional so producers can add context.
    requires({ properties: { type: { const: 'statement' } } }, ['statement', 'decision', 'timing']),
    requires({ properties: { type: { const: 'session.start' } } }, ['identity', 'database']),
    requires({ properties: { type: { const: 'session.end' } } }, ['end']),
    requires({ properties: { type: { const: 'policy.loaded' } } }, ['policy']),
    requires({ properties: { type: { const: 'policy.rejected' } } }, ['error']),
    requires({ properties: { type: { type: 'string', pattern: '^approval\\.' } } }, ['approval']),
    requires({ properties: { type: { const: 'audit.gap' } } }, ['gap']),
    requires({ properties: { type: { const: 'auth.refused' } } }, ['refusal', 'client']),
    requires({ properties: { type: { const: 'audit.checkpoint' } } }, ['checkpoint']),
    requires({ properties: { type: { const: 'audit.read' } } }, ['read']),
    requires({ properties: { type: { const: 'audit.heads' } } }, ['heads']),
    requires({ properties: { type: { const: 'audit.finding' } } }, ['finding']),
    requires({ properties: { type: { const: 'control.applied' } } }, ['control']),
    requires({ properties: { type: { const: 'web.session.end' } } }, ['webSession']),
  ],
} as const;
