import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { approvalSubject } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approvalRequest } from '../../../collector/src/testing/approval-messages.js';
import { type ApprovalsFixture, startApprovalsFixture } from '../../../collector/src/testing/approvals-fixture.js';
import { approversWithOidc, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { BIN, BUILT, runAsApprover, startCollectorProcess, stopProcess } from '../testing/cli-process.js';

const ALICE = 'tok-alice-cli-oidc-0123456789';

/**
 * The CLI with an identity provider's token where it takes a bearer token, unchanged: `pgwarden approvals` (env and
 * --token-file) and `pgwarden audit --collector`, against a collector started by `pgwarden collector --oidc-*`.
 */
describe.skipIf(!BUILT && !process.env.CI)('pgwarden with an OIDC token as the bearer token', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let dir: string;
  let child: Awaited<ReturnType<typeof startCollectorProcess>>['child'] | undefined;
  let url: string;

  beforeAll(async () => {
    idp = await startTestIdp();
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-cli-oidc-'));
    const approvers = approversWithOidc(idp.issuer, ALICE);
    fx = await startApprovalsFixture(approvers, ALICE);
    writeFileSync(join(dir, 'readers.yaml'), `- {name: rhea, oidc: [{issuer: "${idp.issuer}", subject: u-rhea}]}\n`);
    ({ child, url } = await startCollectorProcess([
      '--nats',
      fx.nats.url,
      '--durable',
      'cli-oidc',
      '--store',
      fx.db.url,
      '--approvers-file',
      fx.approversFile,
      '--readers-file',
      join(dir, 'readers.yaml'),
      '--oidc-issuer',
      idp.issuer,
      '--oidc-audience',
      'pgwarden',
      '--oidc-ca-file',
      idp.caFile,
    ]));
  });
  afterAll(async () => {
    if (child) await stopProcess(child);
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('approves with a JWT from PGWARDEN_APPROVER_TOKEN or --token-file; an expired one gets the collector’s reason', async () => {
    const r = approvalRequest();
    await jetstream(fx.nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    const token = await idp.sign({ sub: 'u-dora' });
    const env = { PGWARDEN_COLLECTOR_URL: url, PGWARDEN_APPROVER_TOKEN: token };
    const until = Date.now() + 30_000;
    let listed = '';
    while (!listed.includes(r.id)) {
      if (Date.now() > until) throw new Error(`request never listed: ${listed}`);
      const l = await runAsApprover(['approvals', 'list'], env);
      expect(l.stderr).toBe('');
      listed = l.stdout;
    }
    const tokenFile = join(dir, 'dora.jwt');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const ok = await runAsApprover(['approvals', 'approve', r.id, '--collector', url, '--token-file', tokenFile]);
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    expect(ok.stdout).toMatch(new RegExp(`^approved ${r.id} as dora: `));

    const now = Math.floor(Date.now() / 1000);
    const expired = await idp.sign({ sub: 'u-dora', iat: now - 600, exp: now - 300 });
    const refused = await runAsApprover(['approvals', 'list'], { ...env, PGWARDEN_APPROVER_TOKEN: expired });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^approvals list: collector answered 401 invalid_token: .*token_expired/);
    expect(refused.stderr).not.toContain(expired.split('.')[1]);
  });

  it('reads with a bound reader’s JWT; an unbound one is told so', async () => {
    const env = { ...process.env, PGWARDEN_COLLECTOR_TOKEN: await idp.sign({ sub: 'u-rhea' }) };
    const ok = spawnSync(BIN, ['audit', 'verify', '--collector', url], { encoding: 'utf8', env });
    expect([ok.status, ok.stderr]).toEqual([0, '']);
    const nobody = { ...process.env, PGWARDEN_COLLECTOR_TOKEN: await idp.sign({ sub: 'u-nobody' }) };
    const refused = spawnSync(BIN, ['audit', 'verify', '--collector', url], { encoding: 'utf8', env: nobody });
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain('collector answered 403 not_a_reader: OIDC user u-nobody');
    const tail = spawnSync(BIN, ['audit', 'tail', '--collector', url], {
      encoding: 'utf8',
      env: nobody,
      timeout: 30_000,
    });
    expect([tail.status, tail.stderr]).toEqual([2, expect.stringContaining('403 not_a_reader')]);
  });

  it('pgwarden collector refuses --oidc-issuer without an audience, and --oidc-* without an issuer, in one line', () => {
    for (const [args, re] of [
      [['--oidc-issuer', idp.issuer], /--oidc-issuer needs --oidc-audience/],
      [['--oidc-audience', 'pgwarden'], /the --oidc-\* flags need --oidc-issuer/],
      [
        ['--oidc-issuer', idp.issuer, '--oidc-client-id', 'web', '--readers-file', join(dir, 'readers.yaml')],
        /web sign-in \(--oidc-client-id\) needs --public-url/,
      ],
      [
        ['--oidc-issuer', 'http://idp.example', '--oidc-audience', 'a', '--readers-file', join(dir, 'readers.yaml')],
        /must be https/,
      ],
    ] as const) {
      const r = spawnSync(BIN, ['collector', '--listen', '127.0.0.1:0', ...args], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect([r.status, r.stderr], args.join(' ')).toEqual([1, expect.stringMatching(re)]);
      expect(r.stderr).toMatch(/^pgwarden collector: [^\n]*\n$/);
    }
  });
});
