import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  approvalSubject,
  decisionSigningKey,
  decisionVerifyKey,
  parseApprovalDecision,
  signDecision,
  verifyDecision,
} from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Collector } from '../../../collector/src/collector.js';
import { approvalClosed, approvalRequest } from '../../../collector/src/testing/approval-messages.js';
import {
  type ApprovalsFixture,
  approversYaml,
  startApprovalsFixture,
} from '../../../collector/src/testing/approvals-fixture.js';
import { BUILT, runAsApprover } from '../testing/cli-process.js';
import { formatApproval, formatApprovalTable, relativeTime } from './approvals.js';

const NOW = Date.parse('2026-11-30T12:00:00Z');

describe('approvals output', () => {
  const e = {
    id: '0b9a6c1e-8d3f-4a53-9f0e-2d1c5b7a9e11',
    state: 'pending' as const,
    request: approvalRequest({
      id: '0b9a6c1e-8d3f-4a53-9f0e-2d1c5b7a9e11',
      sql: 'DELETE FROM public.orders\n  WHERE id = 42',
      requestedAt: new Date(NOW - 90_000).toISOString(),
      expiresAt: new Date(NOW + 8 * 60_000).toISOString(),
    }),
  };

  it('relative times read as humans say them', () => {
    expect(relativeTime(new Date(NOW + 8 * 60_000).toISOString(), NOW)).toBe('in 8m');
    expect(relativeTime(new Date(NOW - 30_000).toISOString(), NOW)).toBe('30s ago');
    expect(relativeTime(new Date(NOW - 3 * 86_400_000).toISOString(), NOW)).toBe('3d ago');
  });

  it('a table row per entry with the full id (to approve it) and the SQL on one line', () => {
    const [head, row, ...rest] = formatApprovalTable([e], NOW).split('\n');
    expect(head).toBe(`ID${' '.repeat(36)}STATE    REQUESTED  EXPIRES  WHO  POLICY${' '.repeat(37)}SQL`);
    expect(row).toBe(
      `${e.id}  pending  2m ago     in 8m    ana  agents/writer-review#writes-need-approval  DELETE FROM public.orders WHERE id = 42`,
    );
    expect(rest).toEqual(['']);
  });

  it('show prints who asked, who may decide, and the SQL as written', () => {
    const text = formatApproval(
      {
        ...e,
        state: 'decided',
        decision: { v: 1, id: e.id, decision: 'rejected', by: { name: 'bob', groups: [] }, reason: 'no', at: 'T' },
      },
      NOW,
    );
    expect(text).toContain('requested  2026-11-30T11:58:30.000Z (2m ago) by ana, session sess-held-1\n');
    expect(text).toContain('approvers  users bob; groups dba\n');
    expect(text).toContain('decision   rejected by bob at T: no\n');
    expect(text.endsWith('sql\n  DELETE FROM public.orders\n    WHERE id = 42\n')).toBe(true);
  });
});

describe('approvals output of what the agent wrote', () => {
  // Each reproduced through a real sidecar: in a terminal the first hid `*/ OR true /*` (ESC[8m conceals), the
  // second wrote the harmless half over the line, the third displayed its comparison reordered.
  const concealed = 'DELETE FROM orders WHERE id = 44 /*\x1b[8m*/ OR true /*\x1b[0m*/';
  const overwritten = 'DELETE FROM orders WHERE id = 44 OR true /*\r*/ -- DELETE FROM orders WHERE id = 44';
  const reordered = "DELETE FROM orders WHERE status <> 'new\u202E \u2066AND id = 44\u2069 \u2066'";
  const entry = (sql: string, params?: string[]) => ({
    id: '0b9a6c1e-8d3f-4a53-9f0e-2d1c5b7a9e11',
    state: 'pending' as const,
    request: approvalRequest({ sql, ...(params ? { params } : {}) }),
  });

  it('show and list print controls, bidi overrides and long padding as marks, never as themselves', () => {
    const shown = [concealed, overwritten, reordered].map((sql) => formatApproval(entry(sql), NOW));
    for (const text of shown) expect(text).not.toMatch(/[\x1b\r\u202e\u2066\u2069]/);
    expect(shown[0]).toContain('sql\n  DELETE FROM orders WHERE id = 44 /*⟨U+001B⟩[8m*/ OR true /*⟨U+001B⟩[0m*/\n');
    expect(shown[1]).toContain('OR true /*⟨1 other whitespace (tab, CR, FF, VT)⟩*/ -- DELETE');
    expect(shown[2]).toContain("'new⟨U+202E⟩ ⟨U+2066⟩AND id = 44⟨U+2069⟩ ⟨U+2066⟩'\n");
    expect(shown[2]).toContain('not ASCII  U+202E, U+2066, U+2069\n');
    const padded = formatApproval(entry(`DELETE FROM orders WHERE id = 44${'\n'.repeat(5000)}OR true`), NOW);
    expect(padded).toContain('sql\n  DELETE FROM orders WHERE id = 44⟨5000 line breaks⟩\n  OR true\n');
    const values = formatApproval(
      entry('UPDATE users SET role = $1 WHERE name = $2', ['admin', '\u0430lice\x1b[2K']),
      NOW,
    );
    expect(values).toContain('values\n  $1 = "admin"\n  $2 = "аlice\\u001b[2K"\n');
    expect(values).toContain('not ASCII  U+0430 а\n');
    expect(values).toContain('⚠ look-alike "аlice" mixes Cyrillic and Latin (U+0430 а), reads as "alice"\n');
    // A table and a requester that pass for others: flagged in show, and in list before the SQL.
    const spoofed = {
      ...entry('DELETE FROM public.\u0440ayments WHERE id = 1'),
      request: approvalRequest({
        sql: 'DELETE FROM public.\u0440ayments WHERE id = 1',
        identity: { ...approvalRequest().identity, user: 'b\u043eb' },
      }),
    };
    expect(formatApproval(spoofed, NOW)).toContain(
      '⚠ look-alike "рayments" mixes Cyrillic and Latin (U+0440 р), reads as "payments"\n' +
        '             "bоb" mixes Cyrillic and Latin (U+043E о), reads as "bob"\n',
    );
    expect(formatApprovalTable([spoofed], NOW)).toContain('⚠ look-alike: DELETE FROM public.рayments WHERE id = 1');
    expect(formatApprovalTable([entry(concealed)], NOW)).not.toContain('look-alike');
    const table = formatApprovalTable([entry(concealed)], NOW);
    expect(table).not.toContain('\x1b');
    expect(table).toContain('DELETE FROM orders WHERE id = 44 /*⟨U+001B⟩[8m*/ OR true /*…');
  });
});

// Drives the built CLI (`make test` builds first) against a collector on a real nats-server, as an approver would.
const pgwarden = runAsApprover;

// Under CI nothing may be skipped silently: a missing build fails these tests instead.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden approvals against a collector', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-cli-approvals-'));
  const tokenFile = join(dir, 'alice.token');
  let fx: ApprovalsFixture;
  let collector: Collector;
  let nc: NatsConnection;

  beforeAll(async () => {
    writeFileSync(tokenFile, 'alice-secret\n');
    fx = await startApprovalsFixture(
      approversYaml({ alice: { token: 'alice-secret', groups: ['dba'] } }),
      'alice-secret',
    );
    ({ collector, nc } = fx);
  });
  afterAll(async () => {
    await fx?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists, approves (the sidecar receives it), shows, and refuses with the documented exit codes', async () => {
    const env = { PGWARDEN_COLLECTOR_URL: collector.url, PGWARDEN_APPROVER_TOKEN: 'alice-secret' };
    const empty = await pgwarden(['approvals', 'list'], env);
    expect(empty.stdout).toBe('no pending approvals\n');

    const r = approvalRequest();
    await jetstream(nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    let listed = '';
    const listedBy = Date.now() + 30_000;
    while (!listed.includes(r.id)) {
      if (Date.now() > listedBy) throw new Error('request never listed');
      listed = (await pgwarden(['approvals', 'list'], env)).stdout;
    }
    expect(listed).toMatch(
      new RegExp(
        `^${r.id}  pending  .*  ana  agents/writer-review#writes-need-approval  DELETE FROM public\\.orders WHERE id = 42$`,
        'm',
      ),
    );

    const sub = nc.subscribe(approvalSubject('decision', r.id), { max: 1 });
    const received = (async () => {
      for await (const m of sub) return parseApprovalDecision(m.data);
    })();
    await nc.flush();
    // The token from --token-file, the collector from --collector: no environment needed.
    const ok = await pgwarden([
      'approvals',
      'approve',
      r.id,
      '--reason',
      'change ticket OPS-7',
      '--collector',
      collector.url,
      '--token-file',
      tokenFile,
    ]);
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    expect(ok.stdout).toBe(`approved ${r.id} as alice: published; the sidecar applies it when it receives it\n`);
    expect(await received).toMatchObject({
      id: r.id,
      decision: 'approved',
      by: { name: 'alice' },
      reason: 'change ticket OPS-7',
    });

    // What reaches the approver's terminal from the agent: marks, not escape sequences; JSON with them escaped.
    const evil = approvalRequest({ sql: 'DELETE FROM orders /*\x1b[8m*/ OR true /*\x1b[0m\u202e*/' });
    await jetstream(nc).publish(approvalSubject('request', evil.id), JSON.stringify(evil));
    let evilShown = await pgwarden(['approvals', 'show', evil.id], env);
    for (let i = 0; evilShown.code !== 0 && i < 50; i++)
      evilShown = await pgwarden(['approvals', 'show', evil.id], env);
    expect(evilShown.stdout).toContain('  DELETE FROM orders /*⟨U+001B⟩[8m*/ OR true /*⟨U+001B⟩[0m⟨U+202E⟩*/\n');
    const evilJson = await pgwarden(['approvals', 'show', evil.id, '--json'], env);
    expect(evilJson.stdout).not.toMatch(/[\x1b\u202e]/);
    expect(JSON.parse(evilJson.stdout).request.sql).toBe(evil.sql);
    expect((await pgwarden(['approvals', 'list'], env)).stdout).not.toMatch(/[\x1b\u202e]/);
    expect((await pgwarden(['approvals', 'list', '--json'], env)).stdout).not.toMatch(/[\x1b\u202e]/);

    const shown = await pgwarden(['approvals', 'show', r.id, '--json'], env);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id: r.id, state: 'decided', decision: { by: { name: 'alice' } } });

    const again = await pgwarden(['approvals', 'reject', r.id], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^approvals reject: collector answered 409 not_pending: /);
    const decided = await pgwarden(['approvals', 'list', '--state', 'decided,rejected', '--limit', '1', '--json'], env);
    expect(JSON.parse(decided.stdout).map((e: { id: string }) => e.id)).toEqual([r.id]);
    const badLimit = await pgwarden(['approvals', 'list', '--limit', '0'], env);
    expect([badLimit.code, badLimit.stderr]).toEqual([1, expect.stringContaining('400 bad_limit')]);
    const badState = await pgwarden(['approvals', 'list', '--state', 'maybe'], env);
    expect([badState.code, badState.stderr]).toEqual([1, expect.stringContaining('400 bad_state')]);
    const wrongToken = await pgwarden(['approvals', 'list'], { ...env, PGWARDEN_APPROVER_TOKEN: 'guess' });
    expect([wrongToken.code, wrongToken.stderr]).toEqual([1, expect.stringContaining('401 unauthorized')]);
    const noToken = await pgwarden(['approvals', 'list'], { PGWARDEN_COLLECTOR_URL: collector.url });
    expect([noToken.code, noToken.stderr]).toEqual([2, expect.stringContaining('no approver token')]);
    const unreachable = await pgwarden(['approvals', 'list', '--collector', 'http://127.0.0.1:9'], env);
    expect([unreachable.code, unreachable.stderr]).toEqual([2, expect.stringContaining('cannot reach the collector')]);
  }, 120_000);

  it('approve --for asks for a grant; grants lists the active ones; revoke ends one', async () => {
    const env = { PGWARDEN_COLLECTOR_URL: collector.url, PGWARDEN_APPROVER_TOKEN: 'alice-secret' };
    const r = approvalRequest({ grantMax: '1h', fingerprint: '0123456789abcdef' });
    await jetstream(nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    const seenBy = Date.now() + 30_000;
    while (!(await pgwarden(['approvals', 'show', r.id], env)).stdout.includes('grantable  up to 1h')) {
      if (Date.now() > seenBy) throw new Error('request never shown');
    }
    const tooLong = await pgwarden(['approvals', 'approve', r.id, '--for', '2h'], env);
    expect([tooLong.code, tooLong.stderr]).toEqual([1, expect.stringContaining('400 bad_grant')]);
    const ok = await pgwarden(['approvals', 'approve', r.id, '--for', '30m'], env);
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    expect(ok.stdout).toBe(
      `approved ${r.id} as alice (a grant for 30m was asked for): published; the sidecar applies it when it receives it\n`,
    );
    expect((await pgwarden(['approvals', 'grants'], env)).stdout).toBe('no active grants\n');
    // The sidecar applies it and reports when the grant ends.
    const until = new Date(Date.now() + 1_800_000).toISOString();
    const closed = approvalClosed(r.id, 'approved', { name: 'alice', groups: [] }, until);
    await jetstream(nc).publish(approvalSubject('closed', r.id), JSON.stringify(closed));
    let grants = '';
    while (!grants.includes(r.id)) {
      if (Date.now() > seenBy) throw new Error('grant never listed');
      grants = (await pgwarden(['approvals', 'grants'], env)).stdout;
    }
    expect(grants).toMatch(
      new RegExp(`^${r.id}  in 30m  alice  ana  agents/writer-review#writes-need-approval  DELETE`, 'm'),
    );
    expect((await pgwarden(['approvals', 'show', r.id], env)).stdout).toContain(`grant      active until ${until}`);
    const revoked = await pgwarden(['approvals', 'revoke', r.id, '--reason', 'done'], env);
    expect(revoked).toMatchObject({
      code: 0,
      stdout: `revoked the grant of ${r.id}: published; the sidecar ends it when it receives it\n`,
    });
    const twice = await pgwarden(['approvals', 'revoke', r.id], env);
    expect([twice.code, twice.stderr]).toEqual([1, expect.stringContaining('409 not_pending')]);
    expect((await pgwarden(['approvals', 'show', r.id], env)).stdout).toContain('grant      revoked by alice at ');
  }, 120_000);
});

// The built CLI writes the key: without a build it is skipped, except under CI, where that fails instead.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden approvals keygen', () => {
  it('writes the private key (0600) and prints the public key, which verifies what the key signs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-keygen-'));
    try {
      const out = join(dir, 'signing.pem');
      const made = await pgwarden(['approvals', 'keygen', '--out', out]);
      expect(made.code, made.stderr).toBe(0);
      expect(made.stdout).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+\n-----END PUBLIC KEY-----\n$/);
      expect(statSync(out).mode & 0o777).toBe(0o600);
      const pem = readFileSync(out, 'utf8');
      expect(made.stdout).not.toContain(pem.split('\n')[1]);
      const decision = {
        v: 1 as const,
        id: '6f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b',
        decision: 'approved' as const,
        by: { name: 'alice', groups: [] },
        at: new Date().toISOString(),
      };
      const signed = signDecision(decision, decisionSigningKey(pem));
      expect(verifyDecision(signed, [decisionVerifyKey(made.stdout)])).toBe(true);
      // An existing key is never overwritten.
      const again = await pgwarden(['approvals', 'keygen', '--out', out]);
      expect([again.code, again.stderr]).toEqual([2, expect.stringContaining('cannot write')]);
      expect(readFileSync(out, 'utf8')).toBe(pem);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
