import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseControlMessage, suspensionSubject, type TerminateMessage, terminateSubject } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ApprovalsFixture,
  approversYaml,
  startApprovalsFixture,
} from '../../../collector/src/testing/approvals-fixture.js';
import { makeControlApplied, makeSession } from '../../../collector/src/testing/audit-events.js';
import { BUILT, runAsApprover } from '../testing/cli-process.js';
import { formatControl, formatSuspensions, policyPath } from './control.js';

const NOW = Date.parse('2026-11-30T12:00:00Z');

describe('control output and arguments', () => {
  it('a bare policy name means the policy without a namespace', () => {
    expect(policyPath('agents/analytics-agent')).toBe('agents/analytics-agent');
    expect(policyPath('local-policy')).toBe('_/local-policy');
    for (const bad of ['a/b/c', '/x', 'x/', ''])
      expect(() => policyPath(bad)).toThrow(/is neither <namespace>\/<policy> nor <policy>/);
  });

  it('says what was published, as whom, and what the sidecars do', () => {
    const base = { v: 1 as const, id: 'c1', by: 'alice', reason: 'r', at: 'T' };
    expect(formatControl({ ...base, kind: 'terminate', session: 's1', sig: 'x' })).toBe(
      'terminate s1 published as alice (control c1, signed): its sidecar ends the session when it receives it\n',
    );
    expect(formatControl({ ...base, kind: 'suspend', policy: { namespace: '_', name: 'p' } })).toBe(
      'suspend _/p published as alice (control c1): every sidecar serving it refuses new logins and ends its sessions\n',
    );
  });

  it('lists suspensions as a table, the reason last and on one line', () => {
    const at = new Date(NOW - 5 * 60_000).toISOString();
    expect(
      formatSuspensions(
        [
          {
            policy: { namespace: 'agents', name: 'analytics-agent' },
            by: 'alice',
            reason: 'incident\n42',
            at,
            id: 'i',
            signed: true,
          },
          { policy: { namespace: '_', name: 'p' }, by: 'bob', reason: 'r', at, id: 'j', signed: false },
        ],
        NOW,
      ),
    ).toBe(
      [
        'POLICY                  SUSPENDED  BY     SIGNED  REASON',
        'agents/analytics-agent  5m ago     alice  yes     incident 42',
        '_/p                     5m ago     bob    no      r',
        '',
      ].join('\n'),
    );
    expect(formatSuspensions([], NOW)).toBe('no suspended policies\n');
  });
});

// Drives the built CLI (`make test` builds first) against a collector on a real nats-server, as an approver would.
const pgwarden = runAsApprover;

// Under CI nothing may be skipped silently: a missing build fails these tests instead.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden control against a collector', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-cli-control-'));
  const tokenFile = join(dir, 'alice.token');
  const session = randomUUID();
  let fx: ApprovalsFixture;
  let env: Record<string, string>;

  /** The next message published on `subject`, parsed, as a sidecar subscribed to it receives it. */
  const nextOn = async (subject: string) => {
    const sub = fx.nc.subscribe(subject, { max: 1 });
    await fx.nc.flush();
    return (async () => {
      for await (const m of sub) return parseControlMessage(m.data);
    })();
  };

  beforeAll(async () => {
    writeFileSync(tokenFile, 'alice-secret\n');
    fx = await startApprovalsFixture(
      approversYaml({ alice: { token: 'alice-secret', groups: ['dba'] } }),
      'alice-secret',
    );
    env = { PGWARDEN_COLLECTOR_URL: fx.collector.url, PGWARDEN_APPROVER_TOKEN: 'alice-secret' };
    for (const e of makeSession({ id: session, statements: 1, end: false })) await fx.collector.ingest(e);
  });
  afterAll(async () => {
    await fx?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('terminates, suspends, lists and resumes, and refuses with the documented exit codes', async () => {
    const ended = nextOn(terminateSubject(session));
    // The token from --token-file, the collector from --collector: no environment needed.
    const running = pgwarden([
      'control',
      'terminate',
      session,
      '--reason',
      'runaway loop',
      '--collector',
      fx.collector.url,
      '--token-file',
      tokenFile,
    ]);
    const message = await ended;
    expect(message).toMatchObject({ kind: 'terminate', session, by: 'alice', reason: 'runaway loop' });
    // The session's sidecar reports it (its control.applied reaches the collector): the command waits for that.
    const m = message as TerminateMessage;
    const applied = { kind: m.kind, id: m.id, by: m.by, reason: m.reason, at: m.at, session, signed: false };
    for (const e of makeControlApplied('sc-1', [{ ...applied, sessionsEnded: 1 }], Date.now()))
      expect(await fx.collector.ingest(e)).toBe('stored');
    const terminated = await running;
    expect(terminated).toMatchObject({ code: 0, stderr: '' });
    expect(terminated.stdout).toMatch(
      new RegExp(
        `^terminate ${session} published as alice \\(control [0-9a-f-]{36}\\): its sidecar ends.*\napplied by sc-1 \\(agents\\): ended 1 session\n$`,
      ),
    );
    // Nobody confirms: exit status 3, saying why that may be.
    const unconfirmed = await pgwarden(['control', 'terminate', session, '--reason', 'again', '--wait', '1'], env);
    expect([unconfirmed.code, unconfirmed.stderr]).toEqual([
      3,
      `control terminate: no sidecar reported ending session ${session} within 1 s: it may be cut off from NATS (it ends the session when it reconnects) or the session ended already\n`,
    ]);

    const suspended = nextOn(suspensionSubject({ namespace: '_', name: 'local-policy' }));
    const alone = await pgwarden(['control', 'suspend', 'local-policy', '--reason', 'incident 42', '--wait', '1'], env);
    expect(alone.code).toBe(0);
    expect(alone.stdout).toMatch(/\nno sidecar reported applying it within 1 s \(a sidecar serving the policy/);
    expect(await suspended).toMatchObject({ kind: 'suspend', policy: { namespace: '_', name: 'local-policy' } });
    const json = await pgwarden(
      ['control', 'suspend', 'agents/analytics-agent', '--reason', 'incident 42', '--json', '--wait', '0'],
      env,
    );
    expect(JSON.parse(json.stdout).control).toMatchObject({ kind: 'suspend', by: 'alice' });

    const listed = await pgwarden(['control', 'list'], env);
    expect(listed.stdout).toMatch(
      /^POLICY +SUSPENDED +BY +SIGNED +REASON\n_\/local-policy +\d+s ago +alice +no +incident 42\nagents\/analytics-agent /,
    );
    expect((await pgwarden(['control', 'resume', 'local-policy', '--reason', 'over', '--wait', '0'], env)).code).toBe(
      0,
    );
    const after = JSON.parse((await pgwarden(['control', 'list', '--json'], env)).stdout);
    expect(after.map((s: any) => `${s.policy.namespace}/${s.policy.name}`)).toEqual(['agents/analytics-agent']);

    const unknown = await pgwarden(['control', 'terminate', randomUUID(), '--reason', 'r'], env);
    expect([unknown.code, unknown.stderr]).toEqual([
      1,
      expect.stringMatching(/^control terminate: collector answered 404 not_found: /),
    ]);
    const badName = await pgwarden(['control', 'suspend', 'Agents/X', '--reason', 'r'], env);
    expect([badName.code, badName.stderr]).toEqual([1, expect.stringContaining('400 bad_policy')]);
    const tooDeep = await pgwarden(['control', 'suspend', 'a/b/c', '--reason', 'r'], env);
    expect([tooDeep.code, tooDeep.stderr]).toEqual([2, expect.stringContaining('is neither <namespace>/<policy>')]);
    const noReason = await pgwarden(['control', 'suspend', 'agents/x'], env);
    expect([noReason.code, noReason.stderr]).toEqual([1, expect.stringContaining("required option '--reason <text>'")]);
    const wrongToken = await pgwarden(['control', 'list'], { ...env, PGWARDEN_APPROVER_TOKEN: 'guess' });
    expect([wrongToken.code, wrongToken.stderr]).toEqual([1, expect.stringContaining('401 unauthorized')]);
    const noToken = await pgwarden(['control', 'list'], { PGWARDEN_COLLECTOR_URL: fx.collector.url });
    expect([noToken.code, noToken.stderr]).toEqual([2, expect.stringContaining('no approver token')]);
  }, 120_000);

  it('lists every subcommand in its help', async () => {
    const help = await pgwarden(['control', '--help']);
    expect(help.code).toBe(0);
    for (const sub of [
      'terminate [options] <session-id>',
      'suspend [options] <policy>',
      'resume [options] <policy>',
      'list',
    ])
      expect(help.stdout).toContain(sub);
  });
});
