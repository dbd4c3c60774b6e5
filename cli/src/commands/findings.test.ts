import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { sha256Hex } from '../../../collector/src/auth/token-file.js';
import { makeGapDeclaration } from '../../../collector/src/testing/audit-events.js';
import { createTestDatabase } from '../../../collector/src/testing/test-database.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { BUILT, runAsApprover, startCollectorProcess, stopProcess } from '../testing/cli-process.js';

const TOKEN = 'tok-cleo-findings-cli-0123456789';

// CLI process tests drive the built launcher (cli/dist): `make test` builds first; under CI a missing build fails.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden findings list|close against a collector process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-findings-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists a finding with its id, closes it with a reason as the approver, and refuses to close it twice', async () => {
    writeFileSync(join(dir, 'approvers.yaml'), `- {name: cleo, groups: [], tokenSha256: ${sha256Hex(TOKEN)}}\n`);
    // A store on the shared cluster: the findings do not depend on which store holds them, and an embedded (PGlite)
    // one cost the collector process ~3.5 s of CPU to initialise.
    const store = await createTestDatabase(inject('pg'), ROLES.superuser);
    const { child, url } = await startCollectorProcess([
      '--store',
      store.url,
      '--approvers-file',
      join(dir, 'approvers.yaml'),
    ]);
    const as = (args: string[], token = TOKEN) =>
      runAsApprover(['findings', ...args, '--collector', url], { PGWARDEN_APPROVER_TOKEN: token });
    try {
      // A sidecar whose at-risk record was torn: which events it lost is unknown, and no chain will ever tell.
      const gap = makeGapDeclaration({ instance: 'cli-torn', pod: 'orders-0', sessions: [], truncated: true });
      const r = await fetch(`${url}/api/v1/ingest`, { method: 'POST', body: JSON.stringify(gap) });
      expect(await r.json()).toMatchObject({ stored: 1 });

      const listed = await as(['list']);
      expect([listed.code, listed.stderr]).toEqual([0, '']);
      const m = /^#(\d+) \S+Z audit\.gap\.unattributed session sidecar-cli-torn \[agents\] seq 1: /.exec(listed.stdout);
      expect(m, listed.stdout).not.toBeNull();
      const id = (m as RegExpExecArray)[1];

      expect(await as(['close', id])).toMatchObject({
        code: 1,
        stderr: expect.stringContaining("required option '--reason <text>' not specified"),
      });
      expect(await as(['close', id, '--reason', 'x'], 'not-a-token')).toMatchObject({
        code: 1,
        stderr: 'findings close: collector answered 401 unauthorized: missing or unknown approver bearer token\n',
      });
      const closed = await as(['close', id, '--reason', 'disk replaced;\nnothing to recover']);
      expect([closed.code, closed.stderr]).toEqual([0, '']);
      expect(closed.stdout).toMatch(
        new RegExp(
          `^finding #${id} \\(audit\\.gap\\.unattributed session sidecar-cli-torn seq 1\\) closed \\S+Z by cleo: disk replaced; nothing to recover\\n$`,
        ),
      );
      const twice = await as(['close', id, '--reason', 'again']);
      expect(twice).toMatchObject({ code: 1, stderr: expect.stringContaining('409 already_closed: finding') });
      expect(await as(['list'])).toMatchObject({ code: 0, stdout: 'no findings\n' });
      const all = await as(['list', '--state', 'closed', '--json']);
      expect(JSON.parse(all.stdout)).toEqual([
        expect.objectContaining({ id: Number(id), closed: expect.objectContaining({ by: 'cleo' }) }),
      ]);
    } finally {
      expect(await stopProcess(child)).toBe(0);
      await store.drop();
    }
  }, 120_000);
});
