import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, auditEventSchema, verifyChain } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { ROLES } from '../../../test/harness/index.js';
import { type GovernedSidecar, startGovernedSidecar } from '../governance/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';

// Refused logins through the real governed sidecar (OIDC against a real HTTPS IdP, real PostgreSQL behind it) must
// become `auth.refused` events in the sidecar's own chain: schema-valid, chained, and without the token.
const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
const lines: string[] = [];
const sink: AuditSink = {
  // The sink sees exactly what a file or NATS sink would serialise.
  emit: (e) => void lines.push(JSON.stringify(e)),
  ready: () => true,
  close: async () => {},
};
let idp: TestIdp;
let gs: GovernedSidecar;

beforeAll(async () => {
  idp = await startTestIdp();
  const shared = inject('pg');
  const file = join(mkdtempSync(join(tmpdir(), 'pgwarden-refusal-')), 'policy.yaml');
  writeFileSync(
    file,
    `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: oidc-agent, namespace: agents}
spec:
  database: {host: unused, name: app}
  authentication: {mode: oidc, oidc: {issuer: "${idp.issuer}", audience: pgwarden}}
  rules: [{name: reads, action: allow, statements: [select]}]
`,
  );
  gs = await startGovernedSidecar({
    policyPath: file,
    listenPort: 0,
    upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
    credentials: { username: ROLES.scram.user, password: ROLES.scram.password },
    audit: sink,
    auditRecorder: createAuditRecorder(sink, {
      instanceId: 'refusals',
      source: { namespace: 'agents', pod: 'agent-0' },
      refusalRepeatWindowMs: 600,
    }),
    governance: {
      oidc: { ca: idp.ca },
      env: { PGWARDEN_POD_NAMESPACE: 'agents', PGWARDEN_POD_NAME: 'agent-0', PGWARDEN_POD_SERVICE_ACCOUNT: 'bot' },
    },
    http: false,
    pollMs: 0,
  });
});
afterAll(async () => {
  await gs?.close(100);
  await idp?.close();
});

async function login(password: string, extra: pg.ClientConfig = {}): Promise<Error & { code?: string }> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: gs.listeners[0].sidecar.port,
    user: 'agent',
    database: 'app',
    password,
    application_name: 'refusal-test',
    ...extra,
  });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.end();
    throw new Error('login unexpectedly succeeded');
  } catch (err) {
    return err as Error & { code?: string };
  }
}

describe('refused logins are audit events', () => {
  it('an expired and a malformed token each produce one auth.refused event; the token is never recorded', async () => {
    const expired = await idp.sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 600 });
    const malformed = 'opaque-secret-9f8e7d.not-a-jwt';
    expect((await login(expired)).code).toBe('28P01');
    expect((await login(malformed)).code).toBe('28P01');
    // A valid token still logs in (the refusals did not break the listener).
    const ok = new pg.Client({
      host: '127.0.0.1',
      port: gs.listeners[0].sidecar.port,
      user: 'agent',
      database: 'app',
      password: await idp.sign({ sub: 'alice' }),
    });
    await ok.connect();
    await ok.end();

    const events = lines.map((l) => JSON.parse(l) as AuditEvent);
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    const refused = events.filter((e) => e.type === 'auth.refused');
    expect(refused).toHaveLength(2);
    expect(refused.map((e) => e.refusal?.reason)).toEqual(['token_expired', 'malformed_token']);
    expect(refused[0]).toMatchObject({
      session: { id: 'sidecar-refusals' },
      identity: { namespace: 'agents', pod: 'agent-0', serviceAccount: 'bot', groups: [] },
      client: { address: '127.0.0.1', application: 'refusal-test' },
      refusal: { code: '28P01', user: 'agent', database: 'app', mode: 'oidc' },
      policy: { name: 'oidc-agent' },
    });
    expect(refused[0].refusal?.message).toMatch(/expired/);
    // Same chain as policy.loaded: seq continues, hashes link.
    // The sidecar's chain may also hold the heads of the valid login's session (audit.heads, on its own tick).
    const own = events.filter((e) => e.session.id === 'sidecar-refusals' && e.type !== 'audit.heads');
    expect(own.map((e) => e.type)).toEqual(['policy.loaded', 'auth.refused', 'auth.refused']);
    expect(verifyChain(events).ok).toBe(true);

    const all = lines.join('\n');
    for (const token of [expired, malformed]) for (const part of token.split('.')) expect(all).not.toContain(part);
  });

  it('a client retrying with a bad token is recorded once, then once more with the count of its repeats', async () => {
    const expired = await idp.sign({ sub: 'carol', exp: Math.floor(Date.now() / 1000) - 600 });
    const before = lines.length;
    const refusedNow = () =>
      lines
        .slice(before)
        .map((l) => JSON.parse(l) as AuditEvent)
        .filter((e) => e.type === 'auth.refused');
    for (let i = 0; i < 5; i++) expect((await login(expired, { application_name: 'retry-loop' })).code).toBe('28P01');
    // Another client's refusal is its own: not folded into the loop's.
    expect((await login('not-a-jwt', { application_name: 'retry-loop' })).code).toBe('28P01');
    expect(refusedNow().map((e) => e.refusal?.reason)).toEqual(['token_expired', 'malformed_token']);
    const by = Date.now() + 5000;
    while (refusedNow().length < 3 && Date.now() < by) await new Promise((r) => setTimeout(r, 50));
    const [first, , folded] = refusedNow();
    expect(folded).toMatchObject({
      client: { address: '127.0.0.1', application: 'retry-loop' },
      refusal: { reason: 'token_expired', code: '28P01', user: 'agent', repeated: 4 },
    });
    expect(first.refusal?.repeated).toBeUndefined();
    expect(validate(folded), JSON.stringify(validate.errors)).toBe(true);
    await new Promise((r) => setTimeout(r, 800));
    expect(refusedNow()).toHaveLength(3);
    expect(verifyChain(lines.map((l) => JSON.parse(l) as AuditEvent)).ok).toBe(true);
  });

  it('a startup packet refused for its parameters (options -c role=…) is an auth.refused event too', async () => {
    const err = await login(await idp.sign({ sub: 'alice' }), {
      options: '-c role=postgres',
      application_name: 'options-test',
    });
    expect(err.code).toBe('08P01');
    const events = lines.map((l) => JSON.parse(l) as AuditEvent);
    const refused = events.filter((e) => e.type === 'auth.refused' && e.refusal?.reason === 'startup_parameter');
    expect(refused).toHaveLength(1);
    expect(validate(refused[0]), JSON.stringify(validate.errors)).toBe(true);
    expect(refused[0]).toMatchObject({
      session: { id: 'sidecar-refusals' },
      client: { address: '127.0.0.1', application: 'options-test' },
      refusal: { code: '08P01', user: 'agent', database: 'app' },
      policy: { name: 'oidc-agent' },
    });
    expect(refused[0].refusal?.message).toMatch(/"options" is not allowed/);
    expect(verifyChain(events).ok).toBe(true);
  });

  it('a connection that is not a valid startup exchange (a probe, a nameless startup packet) is one too', async () => {
    const port = gs.listeners[0].sidecar.port;
    // Sends raw bytes and returns what the sidecar answered before it closed the connection.
    const raw = (bytes: Buffer) =>
      new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const s = connect(port, '127.0.0.1', () => s.write(bytes));
        s.on('data', (c) => chunks.push(c));
        s.on('error', reject);
        s.on('close', () => resolve(Buffer.concat(chunks)));
      });
    const before = lines.length;
    const http = await raw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(http[0]).toBe(0x45); // ErrorResponse
    expect(http.toString('latin1')).toContain('C08P01');
    // A StartupMessage (protocol 3.0) whose only parameter is the database: no user name.
    const body = Buffer.concat([Buffer.from([0, 3, 0, 0]), Buffer.from('database\0app\0\0')]);
    const len = Buffer.alloc(4);
    len.writeInt32BE(body.length + 4);
    const nameless = await raw(Buffer.concat([len, body]));
    expect(nameless.toString('latin1')).toContain('C28000');
    const events = lines.slice(before).map((l) => JSON.parse(l) as AuditEvent);
    const refused = events.filter((e) => e.type === 'auth.refused');
    expect(refused.map((e) => [e.refusal?.reason, e.refusal?.code])).toEqual([
      ['protocol_violation', '08P01'],
      ['protocol_violation', '28000'],
    ]);
    for (const e of refused) {
      expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
      expect(e).toMatchObject({ session: { id: 'sidecar-refusals' }, client: { address: '127.0.0.1' } });
    }
    expect(refused[1].refusal?.message).toBe('no PostgreSQL user name specified in startup packet');
    expect(verifyChain(lines.map((l) => JSON.parse(l) as AuditEvent)).ok).toBe(true);
    // The listener still serves a valid login afterwards.
    const ok = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'agent',
      database: 'app',
      password: await idp.sign({ sub: 'bob' }),
    });
    await ok.connect();
    await ok.end();
  });
});
