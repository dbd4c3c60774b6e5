import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditSigner, auditVerifyKey, verifyCheckpoint } from '@pgwarden/policy';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { makeHeads, makeSession } from '../../../collector/src/testing/audit-events.js';
import { createTestDatabase } from '../../../collector/src/testing/test-database.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { makeCertificates } from '../../../test/harness/tls.js';
import { BIN, BUILT, startCollectorProcess, stopProcess } from '../testing/cli-process.js';
import { formatFindings, formatSessions, formatTailLine } from './audit.js';

describe('audit output of what the agent wrote', () => {
  it('tail, sessions and findings lines show escape sequences, carriage returns and bidi controls as marks', () => {
    const line = formatTailLine({
      id: 's.2',
      time: 'T',
      type: 'statement',
      session: { id: 's\x1b]0;pwned\x07', seq: 2 },
      statement: { text: 'DELETE FROM t WHERE id = 44 /*\x1b[8m*/ OR true /*\r\u202e*/' },
    });
    expect(line).not.toMatch(/[\x00-\x1f\u202e]/);
    expect(line).toBe(
      'T -/- - s⟨U+001B⟩]0;pwned⟨U+0007⟩#2 statement  DELETE FROM t WHERE id = 44 /*⟨U+001B⟩[8m*/ OR true ' +
        '/*⟨1 other whitespace (tab, CR, FF, VT)⟩⟨U+202E⟩*/',
    );
    const sessions = formatSessions(
      [{ id: 'x\x1b[2K', identity: '\u202eana', policy: 'p' } as Parameters<typeof formatSessions>[0][0]],
      null,
    );
    expect(sessions).not.toMatch(/[\x1b\u202e]/);
    const findings = formatFindings(
      [
        {
          sessionId: 'x',
          detail: 'ok\rforged',
          seqFrom: 1,
          seqTo: 1,
          closed: { at: 'T', by: 'cleo\u202e', reason: 'fine\x1b[2K' },
        } as Parameters<typeof formatFindings>[0][0],
      ],
      null,
    );
    expect(findings).not.toMatch(/[\r\x1b\u202e]/);
    expect(findings).toContain('(closed T by cleo⟨U+202E⟩: fine⟨U+001B⟩[2K)');
  });
});

// Under CI nothing may be skipped silently: a missing build or browser fails these tests instead.
describe.skipIf(!BUILT && !process.env.CI)(
  'pgwarden collector (embedded store, no NATS) with audit tail and audit verify',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-cli-collector-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    /**
     * `--store` on a database of its own on the shared cluster, for the tests whose subject is not the store: an
     * embedded (PGlite) store in memory costs each collector process ~3.5 s of CPU to initialise. The first two tests
     * keep the embedded store, which is what they read back.
     */
    const stores: Awaited<ReturnType<typeof createTestDatabase>>[] = [];
    afterAll(async () => {
      for (const db of stores) await db.drop();
    });
    const sharedStore = async () => {
      const db = await createTestDatabase(inject('pg'), ROLES.superuser);
      stores.push(db);
      return ['--store', db.url];
    };

    it('ingests over HTTP and from a tailed file, tails live, verifies, and flags a tampered session with exit 1', async () => {
      const tailed = join(dir, 'sidecar-audit.jsonl');
      const fromFile = makeSession({ id: 'file-sess', statements: 4 });
      writeFileSync(tailed, fromFile.map((e) => `${JSON.stringify(e)}\n`).join(''));
      const dataDir = join(dir, 'store');
      const { child, url } = await startCollectorProcess(['--data-dir', dataDir, '--tail-file', tailed]);
      try {
        const tail = spawn(BIN, ['audit', 'tail', '--collector', url, '--decision', 'deny'], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let tailOut = '';
        tail.stdout?.on('data', (c) => (tailOut += c));
        // The tail is live only: wait until the collector counts it as a stream client before sending events.
        const connectedBy = Date.now() + 60_000;
        while (!/pgwarden_collector_stream_clients 1/.test(await (await fetch(`${url}/metrics`)).text())) {
          if (Date.now() > connectedBy) throw new Error('audit tail never connected');
          await new Promise((r) => setTimeout(r, 100));
        }

        const http = [
          makeSession({ id: 'http-sess', statements: 6, denyEvery: 3 }),
          makeSession({ id: 'http-2', statements: 2 }),
        ].flat();
        const r = await fetch(`${url}/api/v1/ingest`, {
          method: 'POST',
          body: http.map((e) => JSON.stringify(e)).join('\n'),
        });
        expect(await r.json()).toEqual({ received: 12, stored: 12, duplicates: 0, rejected: 0 });
        const again = await fetch(`${url}/api/v1/ingest`, {
          method: 'POST',
          body: JSON.stringify([http[0], { not: 'an event' }]),
        });
        expect(await again.json()).toEqual({ received: 2, stored: 0, duplicates: 1, rejected: 1 });

        const until = Date.now() + 60_000;
        let sessions: { id: string }[] = [];
        // Each of these reads is itself recorded, in the collector's own chain `collector-<instance>`.
        const sidecars = () => sessions.filter((s) => !s.id.startsWith('collector-'));
        while (Date.now() < until) {
          sessions = (await (await fetch(`${url}/api/v1/sessions`)).json()).items;
          if (sidecars().length === 3 && tailOut.split('\n').filter(Boolean).length >= 2) break;
          await new Promise((res) => setTimeout(res, 100));
        }
        expect(
          sidecars()
            .map((s) => s.id)
            .sort(),
        ).toEqual(['file-sess', 'http-2', 'http-sess']);
        const lines = tailOut.trim().split('\n');
        expect(lines).toHaveLength(2);
        expect(lines[0]).toMatch(
          /^2026-11-30T12:00:00\.\d{6}Z agents\/analytics-agent analytics http-sess#4 statement DENY\(writes-need-approval\) DELETE FROM public\.orders -> ERROR 42501$/,
        );
        await stopProcess(tail);

        const ok = spawnSync(BIN, ['audit', 'verify', '--collector', url], { encoding: 'utf8' });
        expect(ok.status).toBe(0);
        // The three sessions and the collector's chain of the reads above.
        expect(ok.stdout).toContain('verified 4 session(s): 4 ok, 0 with findings');
      } finally {
        expect(await stopProcess(child)).toBe(0);
      }

      // Alter one stored event directly in the (now closed) embedded store, then verify the store itself.
      const { PGlite } = await import('@electric-sql/pglite');
      const db = new PGlite(dataDir);
      await db.query(
        `UPDATE audit_events SET event = jsonb_set(event::jsonb, '{decision,action}', '"allow"')::text WHERE id = 'http-sess.4'`,
      );
      await db.close();
      const bad = spawnSync(BIN, ['audit', 'verify', '--data-dir', dataDir], { encoding: 'utf8' });
      expect(bad.status).toBe(1);
      expect(bad.stdout).toContain('verified 4 session(s): 3 ok, 1 with findings');
      expect(bad.stdout).toMatch(/session http-sess .*\n\s+audit\.tampered seq 4: /);
    }, 180_000); // five CLI processes and two PGlite starts: slow on a loaded 2-core machine

    it('audit findings lists a cut tail and a chain deleted whole, exit 1; none left: exit 0', async () => {
      const { child, url } = await startCollectorProcess([
        '--data-dir',
        join(dir, 'findings-store'),
        '--gap-grace',
        '0',
      ]);
      try {
        const cut = makeSession({ id: 'cli-cut', statements: 2, instance: 'cli-side' });
        const gone = makeSession({ id: 'cli-gone', statements: 1, instance: 'cli-side' });
        const events = [...cut.slice(0, 3), ...makeHeads('cli-side', [[cut, gone]])];
        const r = await fetch(`${url}/api/v1/ingest`, {
          method: 'POST',
          body: events.map((e) => JSON.stringify(e)).join('\n'),
        });
        expect(await r.json()).toMatchObject({ stored: 4 });
        let listed = spawnSync(BIN, ['audit', 'findings', '--collector', url], { encoding: 'utf8' });
        const until = Date.now() + 30_000;
        while (listed.stdout.trim().split('\n').length < 2 && Date.now() < until) {
          await new Promise((res) => setTimeout(res, 300));
          listed = spawnSync(BIN, ['audit', 'findings', '--collector', url], { encoding: 'utf8' });
        }
        expect([listed.status, listed.stderr]).toEqual([1, '']);
        const lines = listed.stdout.trim().split('\n');
        expect(lines).toHaveLength(2);
        expect(lines).toContainEqual(
          expect.stringMatching(
            /^#\d+ \S+Z audit\.gap session cli-cut \[agents\] seq 4: event 4 is missing: the sidecar's sidecar-cli-side\.1 recorded the chain up to seq 4$/,
          ),
        );
        expect(lines).toContainEqual(
          expect.stringMatching(
            / audit\.gap session cli-gone \(no record\) \[agents\] seq 1\.\.3: the whole chain is missing/,
          ),
        );
        const json = spawnSync(BIN, ['audit', 'findings', '--collector', url, '--session', 'cli-gone', '--json'], {
          encoding: 'utf8',
        });
        expect(JSON.parse(json.stdout)).toEqual([
          expect.objectContaining({ sessionId: 'cli-gone', sessionKnown: false, seqFrom: 1, seqTo: 3 }),
        ]);
        const none = spawnSync(BIN, ['audit', 'findings', '--collector', url, '--state', 'resolved'], {
          encoding: 'utf8',
        });
        expect([none.status, none.stdout]).toEqual([0, 'no findings\n']);
        const bad = spawnSync(BIN, ['audit', 'findings', '--collector', url, '--state', 'later'], { encoding: 'utf8' });
        expect(bad.status).toBe(2);
        expect(bad.stderr).toContain('state must be open, resolved, closed, all');
      } finally {
        expect(await stopProcess(child)).toBe(0);
      }
    }, 120_000);

    it('a collector with a readers file serves audit verify and audit tail only with a reader’s token', async () => {
      // `pgwarden audit token` makes the token and the readers-file entry (only the hash) that the collector reads.
      const readers = join(dir, 'readers.yaml');
      const tokenFile = join(dir, 'rita.token');
      const made = spawnSync(BIN, ['audit', 'token', '--name', 'rita', '--groups', 'audit', '--token-out', tokenFile], {
        encoding: 'utf8',
      });
      expect(made.status, made.stderr).toBe(0);
      const token = readFileSync(tokenFile, 'utf8').trim();
      expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
      expect(made.stdout).not.toContain(token);
      expect(made.stdout).toMatch(/^- \{"name":"rita","groups":\["audit"\],"tokenSha256":"[0-9a-f]{64}"\}\n$/);
      writeFileSync(readers, made.stdout);
      const again = spawnSync(BIN, ['audit', 'token', '--name', 'x', '--token-out', tokenFile], { encoding: 'utf8' });
      expect([again.status, again.stderr]).toEqual([2, expect.stringContaining('cannot write')]);
      // On a network address and without a readers file the collector refuses to start, in one line.
      const open = spawnSync(BIN, ['collector', '--listen', '0.0.0.0:0'], { encoding: 'utf8', timeout: 60_000 });
      expect(open.status).toBe(1);
      expect(open.stderr).toMatch(/^pgwarden collector: the audit API on 0\.0\.0\.0 would let anyone .*--readers-file/);
      expect(open.stderr).not.toMatch(/\n\s+at /);
      const { child, url } = await startCollectorProcess(['--readers-file', readers, ...(await sharedStore())]);
      try {
        const env = { ...process.env, PGWARDEN_COLLECTOR_TOKEN: undefined };
        const none = spawnSync(BIN, ['audit', 'verify', '--collector', url], { encoding: 'utf8', env });
        expect(none.status).toBe(2);
        expect(none.stderr).toContain(
          'collector answered 401: it needs a reader’s token (set PGWARDEN_COLLECTOR_TOKEN',
        );
        const wrong = spawnSync(BIN, ['audit', 'verify', '--collector', url], {
          encoding: 'utf8',
          env: { ...env, PGWARDEN_COLLECTOR_TOKEN: 'not-rita' },
        });
        expect(wrong.status).toBe(2);
        expect(wrong.stderr).toContain('the token is not a reader’s or approver’s');
        expect(wrong.stderr).not.toContain('not-rita');
        for (const how of [
          { args: ['--token-file', tokenFile], env },
          { args: [], env: { ...env, PGWARDEN_COLLECTOR_TOKEN: token } },
        ]) {
          const ok = spawnSync(BIN, ['audit', 'verify', '--collector', url, ...how.args], {
            encoding: 'utf8',
            env: how.env,
          });
          expect(ok.stderr).toBe('');
          expect(ok.status).toBe(0);
          // Nothing but the collector's own chain, which holds the refused reads above.
          expect(ok.stdout).toContain('verified 1 session(s): 1 ok, 0 with findings');
        }
        // A tail that is refused says why and ends, instead of retrying forever.
        const tail = spawnSync(BIN, ['audit', 'tail', '--collector', url], { encoding: 'utf8', env, timeout: 30_000 });
        expect(tail.status).toBe(2);
        expect(tail.stderr).toContain('collector answered 401');
      } finally {
        await stopProcess(child);
      }
    }, 120_000);

    it('talks to a collector that serves HTTPS, trusting its CA through NODE_EXTRA_CA_CERTS', async () => {
      const certs = makeCertificates(join(dir, 'tls'));
      const { child, url } = await startCollectorProcess([
        '--tls-cert',
        certs.certFile,
        '--tls-key',
        certs.keyFile,
        ...(await sharedStore()),
      ]);
      try {
        expect(url).toMatch(/^https:\/\//);
        const trusted = { ...process.env, NODE_EXTRA_CA_CERTS: certs.caFile };
        const ok = spawnSync(BIN, ['audit', 'verify', '--collector', url], { encoding: 'utf8', env: trusted });
        expect([ok.status, ok.stderr]).toEqual([0, '']);
        expect(ok.stdout).toContain('verified 0 session(s)');
        const untrusted = spawnSync(BIN, ['audit', 'verify', '--collector', url], { encoding: 'utf8' });
        expect(untrusted.status).toBe(2);
        // The tail speaks https too: it connects (the collector counts it) instead of failing on the scheme.
        const tail = spawn(BIN, ['audit', 'tail', '--collector', url], {
          env: trusted,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let tailErr = '';
        tail.stderr?.on('data', (c) => (tailErr += c));
        try {
          const until = Date.now() + 30_000;
          let clients = 0;
          while (clients === 0 && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 200));
            const metrics = spawnSync(
              process.execPath,
              [
                '-e',
                `fetch(${JSON.stringify(`${url}/metrics`)}).then(r => r.text()).then(t => process.stdout.write(t))`,
              ],
              { encoding: 'utf8', env: trusted },
            ).stdout;
            clients = Number(/^pgwarden_collector_stream_clients (\d+)/m.exec(metrics)?.[1] ?? 0);
          }
          expect(clients, tailErr).toBe(1);
        } finally {
          await stopProcess(tail);
        }
        const refused = spawnSync(BIN, ['collector', '--tls-cert', certs.certFile], {
          encoding: 'utf8',
          timeout: 60_000,
        });
        expect([refused.status, refused.stderr]).toEqual([
          1,
          'pgwarden collector: --tls-cert and --tls-key go together\n',
        ]);
      } finally {
        await stopProcess(child);
      }
    }, 120_000);
  },
);

// The built CLI writes the key: without a build it is skipped, except under CI, where that fails instead.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden audit keygen', () => {
  it('writes the private key (0600), prints its public key, key id and a keys-file entry that verifies what it signs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audit-keygen-'));
    try {
      const out = join(dir, 'signing.key');
      const made = spawnSync(
        BIN,
        ['audit', 'keygen', '--out', out, '--name', 'agents-2026', '--namespaces', 'agents,ops'],
        {
          encoding: 'utf8',
        },
      );
      expect(made.status, made.stderr).toBe(0);
      expect(statSync(out).mode & 0o777).toBe(0o600);
      const privatePem = readFileSync(out, 'utf8');
      expect(privatePem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      expect(made.stdout).not.toContain(privatePem.split('\n')[1]);
      const signer = auditSigner(privatePem);

      // The stdout is YAML: comments aside, one list item, pasteable under `keys:` of the collector's --audit-keys.
      const [pem] = /^-----BEGIN PUBLIC KEY-----\n[\s\S]+?\n-----END PUBLIC KEY-----\n/.exec(made.stdout) ?? [''];
      expect(auditVerifyKey(pem).keyId).toBe(signer.keyId);
      expect(made.stdout).toContain(`# key id ${signer.keyId}\n`);
      const keysFile = parseYaml(`keys:\n${made.stdout.slice(pem.length)}`) as { keys: Record<string, unknown>[] };
      expect(keysFile.keys).toEqual([{ name: 'agents-2026', publicKey: pem, namespaces: ['agents', 'ops'] }]);
      const key = auditVerifyKey(keysFile.keys[0].publicKey as string);
      const hash = 'a'.repeat(64);
      const checkpoint = { session: { id: 's', seq: 8 }, prevHash: hash, checkpoint: signer.checkpoint('s', 7, hash) };
      expect(verifyCheckpoint(checkpoint, (id) => (id === key.keyId ? key.key : undefined)).ok).toBe(true);

      // Without --name the key id names it; an existing key is never overwritten.
      const plain = spawnSync(BIN, ['audit', 'keygen', '--out', join(dir, 'other.key')], { encoding: 'utf8' });
      const entry = (
        parseYaml(`keys:\n${plain.stdout.replace(/^[\s\S]*?-----END PUBLIC KEY-----\n/, '')}`) as {
          keys: { name: string; publicKey: string; namespaces?: string[] }[];
        }
      ).keys[0];
      expect(entry.name).toBe(auditVerifyKey(entry.publicKey).keyId);
      expect(entry.namespaces).toBeUndefined();
      const again = spawnSync(BIN, ['audit', 'keygen', '--out', out], { encoding: 'utf8' });
      expect([again.status, again.stdout, again.stderr]).toEqual([
        2,
        '',
        `audit keygen: cannot write ${out}: EEXIST\n`,
      ]);
      expect(readFileSync(out, 'utf8')).toBe(privatePem);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
