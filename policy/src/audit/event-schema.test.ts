import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { auditEventSchema } from './event-schema.js';
import { newChain, sealEvent } from './hash-chain.js';

const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);

const statement = () =>
  sealEvent(
    {
      v: 1,
      type: 'statement',
      time: '2026-01-01T00:00:00.123456Z',
      session: { id: 's' },
      statement: { text: 'SELECT 1', tables: [], functions: [] },
      decision: { action: 'allow' },
      timing: { start: '2026-01-01T00:00:00.123000Z', durationMs: 1, upstreamMs: 1, heldMs: 0 },
    },
    newChain(),
  );

describe('audit event schema v1', () => {
  it('accepts a sealed statement event', () => {
    expect(validate(statement()), JSON.stringify(validate.errors)).toBe(true);
  });

  it('accepts an auth.refused event with client and refusal', () => {
    const e = sealEvent(
      {
        v: 1,
        type: 'auth.refused',
        time: '2026-01-01T00:00:00.123456Z',
        session: { id: 'sidecar-x' },
        identity: { namespace: 'agents', pod: 'p-0', groups: [] },
        client: { address: '127.0.0.1', port: 4000 },
        refusal: { reason: 'token_expired', code: '28P01', user: 'agent', database: 'app', mode: 'oidc' },
      },
      newChain(),
    );
    expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
  });

  it('accepts an audit.read event in the collector’s chain, refusals too', () => {
    const chain = newChain();
    const read = (body: Record<string, unknown>) =>
      sealEvent(
        {
          v: 1,
          type: 'audit.read',
          time: '2026-01-01T00:00:00.123456Z',
          session: { id: 'collector-x' },
          source: { instance: 'x', version: '0.1.0' },
          identity: { groups: [] },
          read: body as never,
        },
        chain,
      );
    for (const e of [
      read({
        reader: 'tess',
        route: '/api/v1/events',
        query: { session: 's', limit: '10' },
        namespaces: ['team-a'],
        status: 200,
        items: 3,
      }),
      read({ reader: 'unknown', route: '/api/v1/sessions', status: 401 }),
      read({ reader: 'cleo', route: '/api/v1/findings/7/close', status: 200, items: 1, reason: 'test pod, deleted' }),
    ])
      expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    // An action's reason is as long as the API takes (MAX_CONTROL_REASON), never empty.
    for (const reason of ['', 'x'.repeat(1025)])
      expect(validate(read({ reader: 'cleo', route: '/api/v1/findings/7/close', status: 200, reason }))).toBe(false);
  });

  it.each([
    ['an unknown top-level field', (e: Record<string, unknown>) => Object.assign(e, { extra: 1 })],
    ['a millisecond timestamp', (e: Record<string, unknown>) => Object.assign(e, { time: '2026-01-01T00:00:00.123Z' })],
    ['another version', (e: Record<string, unknown>) => Object.assign(e, { v: 2 })],
    [
      'a statement event without its decision',
      (e: Record<string, unknown>) => Object.assign(e, { decision: undefined }),
    ],
    ['an unknown type', (e: Record<string, unknown>) => Object.assign(e, { type: 'statement.weird' })],
    ['seq 0', (e: Record<string, unknown>) => Object.assign(e, { session: { id: 's', seq: 0 } })],
    ['a malformed hash', (e: Record<string, unknown>) => Object.assign(e, { hash: 'sha256:zz' })],
    [
      'an auth.refused event without its refusal',
      (e: Record<string, unknown>) => Object.assign(e, { type: 'auth.refused', client: { address: 'a', port: 1 } }),
    ],
    [
      'a result sample with a non-text cell',
      (e: Record<string, unknown>) =>
        Object.assign(e, { result: { rows: 1, bytes: 1, sample: { columns: ['a'], rows: [[1]], truncated: false } } }),
    ],
    ['an audit.read event without its read', (e: Record<string, unknown>) => Object.assign(e, { type: 'audit.read' })],
    [
      'an audit.read event carrying a token',
      (e: Record<string, unknown>) =>
        Object.assign(e, {
          type: 'audit.read',
          read: { reader: 'rita', route: '/api/v1/sessions', status: 200, authorization: 'Bearer x' },
        }),
    ],
    [
      'an approval event without approval',
      (e: Record<string, unknown>) => Object.assign(e, { type: 'approval.granted' }),
    ],
  ])('rejects %s', (_name, mutate) => {
    const e = JSON.parse(JSON.stringify(mutate(statement() as unknown as Record<string, unknown>))) as unknown;
    expect(validate(e)).toBe(false);
  });
});
