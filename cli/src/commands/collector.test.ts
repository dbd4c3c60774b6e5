import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { APPROVALS_STREAM, approvalSubject } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { approvalClosed, approvalRequest } from '../../../collector/src/testing/approval-messages.js';
import { createTestDatabase } from '../../../collector/src/testing/test-database.js';
import { waitFor } from '../../../collector/src/testing/wait-for.js';
import { approversWithOidc, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { BIN, BUILT, runAsApprover, stopProcess } from '../testing/cli-process.js';

const URL_TOKEN = 'T0KEN-cli-3a9f5b';

// Under CI nothing may be skipped silently: a missing build fails these tests instead.
/** Starts `pgwarden <args>`, waits for its start-up line and stops it: what it logged up to then. */
async function startLogOf(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c) => (output += c));
  child.stderr?.on('data', (c) => (output += c));
  try {
    await waitFor(() => output.includes('collector started'), 30_000);
  } finally {
    await stopProcess(child);
  }
  return output;
}

describe.skipIf(!BUILT && !process.env.CI)('pgwarden collector: approval notifications', () => {
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    [nats, db] = await Promise.all([startNats(), createTestDatabase(inject('pg'), ROLES.superuser)]);
  });
  afterAll(async () => {
    await db?.drop();
    await nats?.stop();
  });

  it('lists the webhook flags in its help', async () => {
    const help = await runAsApprover(['collector', '--help']);
    expect(help.code).toBe(0);
    for (const flag of [
      '--approval-webhook-url-file <file>',
      '--approval-webhook-format <format>',
      '--approval-webhook-secret-file <file>',
      '--approval-webhook-sql',
      '--no-approval-webhook-outcomes',
      '--public-url <url>',
    ])
      expect(help.stdout).toContain(flag);
    expect(help.stdout).toContain('PGWARDEN_APPROVAL_WEBHOOK_URL');
  });

  it('refuses webhook settings without a URL, in one line', async () => {
    const r = await runAsApprover([
      'collector',
      '--nats',
      nats.url,
      '--listen',
      '127.0.0.1:0',
      '--approval-webhook-sql',
    ]);
    expect([r.code, r.stderr]).toEqual([1, expect.stringMatching(/^pgwarden collector: .*need a webhook URL/)]);
  });

  it('refuses a --trusted-proxy that is not an address or CIDR range, in one line', async () => {
    const r = await runAsApprover([
      'collector',
      '--nats',
      nats.url,
      '--listen',
      '127.0.0.1:0',
      '--trusted-proxy',
      '10.0.0.0/8',
      '--trusted-proxy',
      'ingress-nginx',
    ]);
    expect([r.code, r.stderr]).toEqual([
      1,
      expect.stringMatching(
        /^pgwarden collector: .*--trusted-proxy ingress-nginx: not an IP address or CIDR range\n?$/,
      ),
    ]);
  });

  it('posts a Slack notice to the URL from PGWARDEN_APPROVAL_WEBHOOK_URL, which its output never shows', async () => {
    const bodies: string[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        if (req.url === `/hook/${URL_TOKEN}`) bodies.push(body);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const { port } = receiver.address() as { port: number };
    const child = spawn(
      BIN,
      ['collector', '--nats', nats.url, '--listen', '127.0.0.1:0', '--approval-webhook-format', 'slack'].concat([
        '--public-url',
        'https://pgwarden.example.com',
      ]),
      {
        env: {
          ...process.env,
          PGWARDEN_COLLECTOR_STORE: db.url,
          PGWARDEN_APPROVAL_WEBHOOK_URL: `http://127.0.0.1:${port}/hook/${URL_TOKEN}`,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout?.on('data', (c) => (output += c));
    child.stderr?.on('data', (c) => (output += c));
    const nc = await connect({ servers: nats.url });
    try {
      // Announced are requests (and closings) published once the shared consumers exist.
      const jsm = await jetstreamManager(nc);
      for (const consumer of ['pgwarden-approval-notifier', 'pgwarden-approval-outcomes'])
        await waitFor(
          () =>
            jsm.consumers.info(APPROVALS_STREAM, consumer).then(
              () => true,
              () => false,
            ),
          30_000,
        );
      const r = approvalRequest();
      await jetstream(nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
      await waitFor(() => bodies.length === 1);
      expect(JSON.parse(bodies[0]).text).toContain(
        `asked by ana, expires in 10 min. <https://pgwarden.example.com/?approval=${r.id}#approvals|Review it`,
      );
      // Followed up when its hold ends (on by default).
      await jetstream(nc).publish(approvalSubject('closed', r.id), JSON.stringify(approvalClosed(r.id, 'expired')));
      await waitFor(() => bodies.length === 2);
      expect(JSON.parse(bodies[1]).text).toBe(
        '⌛ Expired without a decision: policy agents/writer-review, rule writes-need-approval, asked by ana. ' +
          `<https://pgwarden.example.com/?approval=${r.id}#approvals|Open in pgwarden>`,
      );
    } finally {
      await nc.close();
      await stopProcess(child);
      await new Promise((r) => receiver.close(r));
    }
    expect(output).toContain(
      `"approvalWebhook":{"origin":"http://127.0.0.1:${port}","format":"slack","outcomes":true}`,
    );
    expect(output).not.toContain(URL_TOKEN);
  });

  it('announces held statements only with --no-approval-webhook-outcomes', async () => {
    const output = await startLogOf(
      ['collector', '--nats', nats.url, '--listen', '127.0.0.1:0', '--no-approval-webhook-outcomes'],
      {
        PGWARDEN_COLLECTOR_STORE: db.url,
        PGWARDEN_APPROVAL_WEBHOOK_URL: `http://127.0.0.1:9/hook/${URL_TOKEN}`,
      },
    );
    expect(output).toContain('"approvalWebhook":{"origin":"http://127.0.0.1:9","format":"json","outcomes":false}');
  });
});

describe.skipIf(!BUILT && !process.env.CI)('pgwarden collector: the web sign-in limit', () => {
  let idp: TestIdp;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let dir: string;
  beforeAll(async () => {
    [idp, db] = await Promise.all([startTestIdp(), createTestDatabase(inject('pg'), ROLES.superuser)]);
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-sign-in-'));
    writeFileSync(join(dir, 'approvers.yaml'), approversWithOidc(idp.issuer, 'tok-alice-sign-in-0123456789', ['dora']));
  });
  afterAll(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    await db?.drop();
    await idp?.close();
  });
  const web = () => [
    '--approvers-file',
    join(dir, 'approvers.yaml'),
    '--oidc-issuer',
    idp.issuer,
    '--oidc-ca-file',
    idp.caFile,
    '--oidc-client-id',
    'pgwarden-web',
    '--public-url',
    'https://pgwarden.example',
  ];

  it('lists the flags in its help', async () => {
    const help = await runAsApprover(['collector', '--help']);
    for (const text of ['--sign-in-burst <n>', '--sign-in-per-minute <n>', 'PGWARDEN_SIGN_IN_BURST'])
      expect(help.stdout).toContain(text);
  });

  it('takes the burst from --sign-in-burst and the refill from env, and answers 429 past them', async () => {
    const child = spawn(
      BIN,
      ['collector', '--listen', '127.0.0.1:0', ...web(), '--sign-in-burst', '3', '--store', db.url],
      {
        // A refill that adds nothing within the test: what passes does not hang on the machine's speed.
        env: { ...process.env, PGWARDEN_SIGN_IN_PER_MINUTE: '0.01' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout?.on('data', (c) => (output += c));
    child.stderr?.on('data', (c) => (output += c));
    try {
      await waitFor(() => /collector listening on (\S+)/.test(output), 30_000);
      const url = /collector listening on (\S+)/.exec(output)![1];
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await fetch(`${url}/auth/login`, { redirect: 'manual' })).status);
      expect(statuses).toEqual([302, 302, 302, 429]);
    } finally {
      await stopProcess(child);
    }
    expect(output).toContain('"webLogin":{"signInRate":{"burst":3,"perMinute":0.01}}');
  });

  it('refuses a limit out of bounds, not a number, or without the web sign-in, in one line', async () => {
    for (const [args, message] of [
      [['--sign-in-burst', '0'], /--sign-in-burst\) must be a whole number from 1 to 1000, not 0$/],
      [['--sign-in-per-minute', '0'], /--sign-in-per-minute\) must be above 0 and at most 6000, not 0$/],
      [['--sign-in-burst', '2e1'], /--sign-in-burst must be a number, not "2e1"$/],
      [['--sign-in-per-minute', ''], /--sign-in-per-minute must be a number, not ""$/],
    ] as const) {
      const r = await runAsApprover(['collector', '--listen', '127.0.0.1:0', ...web(), '--store', db.url, ...args]);
      expect([r.code, r.stderr.trim()], args.join(' ')).toEqual([1, expect.stringMatching(message)]);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const r = await runAsApprover(['collector', '--listen', '127.0.0.1:0', '--sign-in-burst', '5', '--store', db.url]);
    expect([r.code, r.stderr.trim()]).toEqual([
      1,
      'pgwarden collector: --sign-in-burst and --sign-in-per-minute limit the web sign-in: they need --oidc-client-id',
    ]);
  });

  it('renews sign-ins with --web-session-key-file (and previous keys), bounded by the age and idle flags (env too), and refuses bad ones', async () => {
    const key = join(dir, 'session.key');
    writeFileSync(key, randomBytes(32), { mode: 0o600 });
    const previous = join(dir, 'previous.key');
    writeFileSync(previous, randomBytes(32).toString('base64'), { mode: 0o600 });
    const output = await startLogOf(
      [
        'collector',
        '--listen',
        '127.0.0.1:0',
        ...web(),
        '--store',
        db.url,
        '--web-session-key-file',
        key,
        '--web-session-max-age',
        '8h',
        '--web-session-previous-key-file',
        previous,
        '--web-session-previous-key-file',
        key,
      ],
      { PGWARDEN_WEB_SESSION_IDLE_TIMEOUT: '30m' },
    );
    expect(output).toContain('"webSessions":{"renew":true,"maxAgeS":28800,"idleS":1800,"previousKeys":2}');
    writeFileSync(join(dir, 'short.key'), 'not-a-key-0123456789');
    for (const [args, message] of [
      [['--web-session-max-age', '12 hours'], /--web-session-max-age must be a duration from 1s to 720h/],
      [['--web-session-idle-timeout', '0s'], /--web-session-idle-timeout must be a duration from 1s to 720h/],
      [['--web-session-key-file', join(dir, 'missing.key')], /web session key file .*missing\.key: ENOENT$/],
      [['--web-session-key-file', join(dir, 'short.key')], /short\.key holds no 32-byte key/],
      [
        ['--web-session-key-file', key, '--web-session-previous-key-file', join(dir, 'short.key')],
        /previous web session key file .*short\.key holds no 32-byte key/,
      ],
      [
        ['--web-session-previous-key-file', previous],
        /--web-session-previous-key-file only opens what --web-session-key-file sealed: it needs --web-session-key-file$/,
      ],
    ] as const) {
      const r = await runAsApprover(['collector', '--listen', '127.0.0.1:0', ...web(), '--store', db.url, ...args]);
      expect([r.code, r.stderr.trim()], args.join(' ')).toEqual([1, expect.stringMatching(message)]);
      expect(r.stderr).not.toContain('not-a-key');
    }
    const r = await runAsApprover([
      'collector',
      '--listen',
      '127.0.0.1:0',
      '--web-session-key-file',
      key,
      '--store',
      db.url,
    ]);
    expect([r.code, r.stderr.trim()]).toEqual([
      1,
      'pgwarden collector: --oidc-offline-access and the --web-session-* flags shape the web sign-in: they need --oidc-client-id',
    ]);
    // Seven collector processes, each refused or started: generous for CI at twice this machine's time.
  }, 120_000);
});
