import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, auditEventSchema } from '@pgwarden/policy';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import { Ajv } from 'ajv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approversWithOidc, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { sha256Hex } from '../auth/token-file.js';
import type { Collector } from '../collector.js';
import {
  type ApprovalsFixture,
  startApprovalsFixture,
  untilApproverRoutesServe,
} from '../testing/approvals-fixture.js';
import { makeGapDeclaration } from '../testing/audit-events.js';
import { waitFor } from '../testing/wait-for.js';

const ALICE = 'tok-alice-oidc-reads-0123456789';
const RITA = 'tok-rita-oidc-reads-0123456789';
const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);

/**
 * `audit.read` events name the reader's entry and, for one who came with an OIDC token or the web UI's sign-in, the
 * token's verified issuer and `sub`: several people may share an entry, and the trail must tell them apart.
 */
describe('reads through OIDC are recorded with the token’s issuer and subject', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let c: Collector;
  let dir: string;
  let sql: pg.Client;

  beforeAll(async () => {
    idp = await startTestIdp();
    const approvers = approversWithOidc(idp.issuer, ALICE);
    fx = await startApprovalsFixture(approvers, ALICE);
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-oidc-reads-'));
    writeFileSync(
      join(dir, 'readers.yaml'),
      [
        `- {name: rita, tokenSha256: ${sha256Hex(RITA)}}`,
        // Two people, one entry: an on-call rota.
        `- {name: oncall, oidc: [{issuer: "${idp.issuer}", subject: u-ann}, {issuer: "${idp.issuer}", subject: u-bob}]}`,
        '',
      ].join('\n'),
    );
    c = await fx.start({
      read: { readersFile: join(dir, 'readers.yaml') },
      publicUrl: 'https://pgwarden.example',
      oidc: {
        issuer: idp.issuer,
        audience: ['pgwarden'],
        caFile: idp.caFile,
        webLogin: { clientId: 'pgwarden-web' },
      },
      // The default window folds identical reads: two people's reads must not fold into one.
      readAudit: {},
    });
    await untilApproverRoutesServe(c, ALICE);
    sql = new pg.Client({ connectionString: fx.db.url });
    await sql.connect();
  });
  afterAll(async () => {
    await sql?.end();
    await c?.stop();
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The collector's chain of reads as stored (reading it over HTTP would add to it). */
  const reads = async (): Promise<AuditEvent[]> =>
    (
      await sql.query<{ event: string }>('SELECT event FROM audit_events WHERE session_id = $1 ORDER BY seq', [
        c.readAuditSession,
      ])
    ).rows
      .map((r) => JSON.parse(r.event) as AuditEvent)
      .filter((e) => e.type === 'audit.read');
  const get = (path: string, headers: Record<string, string>) => fetch(`${c.url}${path}`, { headers });
  const bearer = async (sub: string) => ({ authorization: `Bearer ${await idp.sign({ sub })}` });
  /** The read event of the newest request to `route` with `query.note` = `note`. */
  const readOf = async (note: string) => {
    let found: AuditEvent | undefined;
    await waitFor(async () => {
      found = (await reads()).findLast((e) => e.read?.query?.note === note);
      return found !== undefined;
    });
    expect(validate(found), JSON.stringify(validate.errors)).toBe(true);
    return found?.read;
  };

  it('a token’s holder: the entry’s name, and who of those bound to it read', async () => {
    for (const sub of ['u-ann', 'u-bob'])
      expect((await get('/api/v1/sessions?note=rota', await bearer(sub))).status).toBe(200);
    await waitFor(async () => (await reads()).filter((e) => e.read?.query?.note === 'rota').length === 2);
    const rota = (await reads()).filter((e) => e.read?.query?.note === 'rota').map((e) => e.read);
    expect(rota).toEqual([
      expect.objectContaining({ reader: 'oncall', status: 200, oidc: { issuer: idp.issuer, subject: 'u-ann' } }),
      expect.objectContaining({ reader: 'oncall', status: 200, oidc: { issuer: idp.issuer, subject: 'u-bob' } }),
    ]);

    expect((await get('/api/v1/approvals?note=dora', await bearer('u-dora'))).status).toBe(200);
    expect(await readOf('dora')).toMatchObject({ reader: 'dora', oidc: { issuer: idp.issuer, subject: 'u-dora' } });

    // A valid token nobody binds is refused, and the record still says whose it was.
    expect((await get('/api/v1/sessions?note=nobody', await bearer('u-mallory'))).status).toBe(403);
    expect(await readOf('nobody')).toMatchObject({
      reader: 'unknown',
      status: 403,
      oidc: { issuer: idp.issuer, subject: 'u-mallory' },
    });

    // A static token has no issuer or subject to record.
    expect((await get('/api/v1/sessions?note=rita', { authorization: `Bearer ${RITA}` })).status).toBe(200);
    expect(await readOf('rita')).not.toHaveProperty('oidc');
  });

  it('a web UI sign-in: the session’s issuer and subject', async () => {
    idp.login = { claims: { sub: 'u-bob' } };
    const login = await fetch(`${c.url}/auth/login`, { redirect: 'manual' });
    const toIdp = createHttpsFetch({ ca: idp.ca });
    const back = new URL((await toIdp(login.headers.get('location') ?? '')).headers.get('location') ?? '');
    const res = await fetch(`${c.url}/auth/callback${back.search}`, {
      redirect: 'manual',
      headers: { cookie: (login.headers.get('set-cookie') ?? '').split(';')[0] },
    });
    expect(res.status).toBe(302);
    const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0];
    expect((await get('/api/v1/events?note=web', { cookie })).status).toBe(200);
    expect(await readOf('web')).toMatchObject({ reader: 'oncall', oidc: { issuer: idp.issuer, subject: 'u-bob' } });
  });
  it('a finding closed with an OIDC token: the approver entry, and the token’s issuer and subject', async () => {
    const gap = makeGapDeclaration({ instance: 'oidc-close', pod: 'oidc-close-0', sessions: [], truncated: true });
    expect(await c.ingest(gap)).toBe('stored');
    const page = await (await get('/api/v1/findings?session=sidecar-oidc-close', await bearer('u-dora'))).json();
    const r = await fetch(`${c.url}/api/v1/findings/${page.items[0].id}/close`, {
      method: 'POST',
      headers: { ...(await bearer('u-dora')), 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'disk replaced; see ticket OPS-1234' }),
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { finding: { closed: unknown } }).finding.closed).toEqual({
      at: expect.stringMatching(/Z$/),
      by: 'dora',
      reason: 'disk replaced; see ticket OPS-1234',
      oidc: { issuer: idp.issuer, subject: 'u-dora' },
    });
    let closing: AuditEvent | undefined;
    await waitFor(async () => {
      closing = (await reads()).findLast((e) => e.read?.route === `/api/v1/findings/${page.items[0].id}/close`);
      return closing !== undefined;
    });
    expect(validate(closing), JSON.stringify(validate.errors)).toBe(true);
    expect(closing?.read).toMatchObject({
      reader: 'dora',
      status: 200,
      oidc: { issuer: idp.issuer, subject: 'u-dora' },
    });
  });
});
