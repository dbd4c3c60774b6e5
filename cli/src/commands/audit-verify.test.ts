import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditSigner, newChain, sealEvent } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { schemaV1Rules } from '../../../collector/src/chain/chain-rules.js';
import { AuditStore } from '../../../collector/src/store/audit-store.js';
import { makeSession } from '../../../collector/src/testing/audit-events.js';
import { createTestDatabase } from '../../../collector/src/testing/test-database.js';
import { freePort } from '../../../test/harness/index.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { BIN, BUILT, startCollectorProcess, stopProcess } from '../testing/cli-process.js';

const run = (args: string[]) => spawnSync(BIN, args, { encoding: 'utf8', timeout: 60_000 });

/** Three sessions: one signed to its end, one open with a statement after its last checkpoint, one never signed. */
function sessions(signer: ReturnType<typeof auditSigner>) {
  return [
    ...makeSession({ id: 'cli-ok', statements: 4, signer, checkpointEvery: 2 }),
    ...makeSession({ id: 'cli-partial', statements: 3, signer, checkpointEvery: 2, end: false }),
    ...makeSession({ id: 'cli-none', statements: 2 }),
  ];
}

// Under CI nothing may be skipped silently: a missing build fails these tests instead.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden audit verify with signed checkpoints', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-cli-signed-'));
  const keysFile = join(dir, 'audit-keys.yaml');
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privatePem = String(privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const signer = auditSigner(privatePem);
  let db: Awaited<ReturnType<typeof createTestDatabase>>;

  beforeAll(async () => {
    const pem = String(publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(
      keysFile,
      `keys:\n  - name: agents-2026\n    publicKey: |\n${pem
        .trim()
        .split('\n')
        .map((l) => `      ${l}`)
        .join('\n')}\n    namespaces: [agents]\n`,
    );
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    const store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
    try {
      await store.ingest(sessions(signer));
    } finally {
      await store.close();
    }
  });
  afterAll(async () => {
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a store directly: the signature states, with the keys given, and --require-signed-audit failing', () => {
    const plain = run(['audit', 'verify', '--store', db.url]);
    expect([plain.status, plain.stderr]).toEqual([0, '']);
    expect(plain.stdout).toBe(
      'verified 3 session(s): 3 ok, 0 with findings\nsignatures: 1 unsigned, 2 unverified (no audit keys)\n',
    );

    const keyed = run(['audit', 'verify', '--store', db.url, '--audit-keys', keysFile]);
    expect([keyed.status, keyed.stderr]).toEqual([0, '']);
    expect(keyed.stdout).toContain('signatures: 1 signed, 1 partial, 1 unsigned (keys: agents-2026)\n');

    // Named sessions are each listed with their state, the ones that verify too.
    const named = run(['audit', 'verify', '--store', db.url, '--audit-keys', keysFile, '--session', 'cli-ok']);
    expect(named.stdout.split('\n').slice(2)).toEqual([
      '  session cli-ok (9 events, seq 1..9, ended; signed through seq 8 by agents-2026): ok',
      '',
    ]);
    const partial = run(['audit', 'verify', '--store', db.url, '--audit-keys', keysFile, '--session', 'cli-partial']);
    expect(partial.stdout).toContain(
      '  session cli-partial (5 events, seq 1..5; partial: 1 event(s) after seq 3 (signed by agents-2026)): ok\n',
    );

    const strict = run([
      'audit',
      'verify',
      '--store',
      db.url,
      '--audit-keys',
      keysFile,
      '--require-signed-audit',
      '--gap-grace',
      '0',
    ]);
    expect(strict.status).toBe(1);
    expect(strict.stdout).toBe(
      [
        'verified 3 session(s): 2 ok, 1 with findings',
        'signatures: 1 signed, 1 partial, 1 unsigned (keys: agents-2026)',
        '  session cli-none (4 events, seq 1..4, ended; unsigned):',
        '    audit.unsigned seq 1..4: the session ended without a valid checkpoint',
        '',
      ].join('\n'),
    );
    // Stored moments ago: within the default grace the sidecar's closing checkpoint may still be on its way.
    expect(run(['audit', 'verify', '--store', db.url, '--audit-keys', keysFile, '--require-signed-audit']).status).toBe(
      0,
    );
    const json = run(['audit', 'verify', '--store', db.url, '--audit-keys', keysFile, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({
      ok: true,
      sessions: 3,
      signatures: { signed: 1, partial: 1, unsigned: 1 },
      auditKeys: { keys: ['agents-2026'] },
    });

    const noKeys = run(['audit', 'verify', '--store', db.url, '--require-signed-audit']);
    expect([noKeys.status, noKeys.stderr]).toEqual([2, 'audit verify: --require-signed-audit needs --audit-keys\n']);
  }, 120_000);

  it('asks a collector started with --audit-keys --require-signed-audit, which refuses a private key in the file', async () => {
    // An empty store of its own on the shared cluster: what is verified does not depend on the store, and an
    // embedded (PGlite) one in memory cost the collector process ~3.5 s of CPU to initialise.
    const store = await createTestDatabase(inject('pg'), ROLES.superuser);
    const { child, url } = await startCollectorProcess([
      '--store',
      store.url,
      '--audit-keys',
      keysFile,
      '--require-signed-audit',
      '--gap-grace',
      '0',
    ]);
    try {
      const r = await fetch(`${url}/api/v1/ingest`, {
        method: 'POST',
        body: sessions(signer)
          .map((e) => JSON.stringify(e))
          .join('\n'),
      });
      expect(await r.json()).toMatchObject({ stored: 18, rejected: 0 });
      const all = run(['audit', 'verify', '--collector', url]);
      expect(all.status).toBe(1);
      expect(all.stdout).toContain('signatures: 1 signed, 1 partial, 1 unsigned (keys: agents-2026)\n');
      expect(all.stdout).toContain(
        '  session cli-none (4 events, seq 1..4, ended; unsigned):\n    audit.unsigned seq 1..4: the session ended without a valid checkpoint\n',
      );
      const one = run(['audit', 'verify', '--collector', url, '--session', 'cli-ok']);
      expect([one.status, one.stderr]).toEqual([0, '']);
      expect(one.stdout).toContain(
        '  session cli-ok (9 events, seq 1..9, ended; signed through seq 8 by agents-2026): ok',
      );
      // The sessions API carries the state recorded at ingest.
      const s = (await (await fetch(`${url}/api/v1/sessions/cli-partial`)).json()) as { session: unknown };
      expect(s.session).toMatchObject({
        signature: 'partial',
        signedSeq: 3,
        signedBy: 'agents-2026',
        unsignedEvents: 1,
      });
      const mixed = run(['audit', 'verify', '--collector', url, '--audit-keys', keysFile]);
      expect([mixed.status, mixed.stderr]).toEqual([
        2,
        'audit verify: --audit-keys and --require-signed-audit are the collector’s own settings with --collector\n',
      ]);
    } finally {
      expect(await stopProcess(child)).toBe(0);
      await store.drop();
    }

    const bad = join(dir, 'private.yaml');
    writeFileSync(bad, `keys:\n  - name: oops\n    publicKey: ${JSON.stringify(privatePem)}\n`);
    const refused = run(['collector', '--listen', '127.0.0.1:0', '--audit-keys', bad]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toBe(
      `pgwarden collector: audit keys file ${bad}: entry 0 (oops): publicKey: this is a private key: give the public key (pgwarden audit keygen)\n`,
    );
    const alone = run(['collector', '--listen', '127.0.0.1:0', '--require-signed-audit']);
    expect([alone.status, alone.stderr]).toEqual([
      1,
      'pgwarden collector: --require-signed-audit needs --audit-keys: without public keys no checkpoint can be verified\n',
    ]);
  }, 120_000);

  it('verifies JSON-lines files without a collector: signed, altered, rewritten and rehashed, and not events', () => {
    const events = sessions(signer);
    const file = join(dir, 'trail.jsonl');
    writeFileSync(file, `${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
    const ok = run(['audit', 'verify', '--file', file, '--audit-keys', keysFile, '--session', 'cli-ok']);
    expect([ok.status, ok.stderr]).toEqual([0, '']);
    expect(ok.stdout).toBe(
      'verified 1 session(s): 1 ok, 0 with findings\nsignatures: 1 signed (keys: agents-2026)\n' +
        '  session cli-ok (9 events, seq 1..9, ended; signed through seq 8 by agents-2026): ok\n',
    );
    // The whole file, and the same through standard input.
    const all = run(['audit', 'verify', '--file', file, '--audit-keys', keysFile]);
    expect(all.stdout).toContain('signatures: 1 signed, 1 partial, 1 unsigned (keys: agents-2026)');
    const piped = spawnSync(BIN, ['audit', 'verify', '--file', '-', '--audit-keys', keysFile], {
      input: readFileSync(file),
      encoding: 'utf8',
    });
    expect([piped.status, piped.stdout]).toEqual([0, all.stdout]);
    // Unsigned sessions fail when signatures are required.
    const strict = run(['audit', 'verify', '--file', file, '--audit-keys', keysFile, '--require-signed-audit']);
    expect(strict.status).toBe(1);
    expect(strict.stdout).toContain('audit.unsigned');

    // A statement edited in place: its hash no longer recomputes.
    const ok9 = events.filter((e) => e.session.id === 'cli-ok');
    const edited = ok9.map((e) =>
      e.session.seq === 3 ? { ...e, statement: { ...e.statement!, text: 'SELECT 2' } } : e,
    );
    writeFileSync(file, `${edited.map((e) => JSON.stringify(e)).join('\n')}\n`);
    const altered = run(['audit', 'verify', '--file', file, '--audit-keys', keysFile]);
    expect(altered.status).toBe(1);
    expect(altered.stdout).toMatch(/audit\.tampered seq 3: event cli-ok\.3 \(seq 3\) content does not match its hash/);

    // Rewritten by someone without the key, every hash recomputed: the chain links, the signatures do not.
    const chain = newChain();
    const rehashed = edited.map((e) => {
      const { hash: _h, prevHash: _p, id: _i, ...rest } = e;
      return sealEvent({ ...rest, session: { id: e.session.id } } as never, chain);
    });
    writeFileSync(file, `${rehashed.map((e) => JSON.stringify(e)).join('\n')}\n`);
    const forged = run(['audit', 'verify', '--file', file, '--audit-keys', keysFile]);
    expect(forged.status).toBe(1);
    expect(forged.stdout).toMatch(/audit\.tampered seq \d+: checkpoint cli-ok\.\d+ not-preceding/);
    expect(forged.stdout).not.toContain('content does not match');

    // A line that is not an audit event fails the file.
    writeFileSync(file, `${ok9.map((e) => JSON.stringify(e)).join('\n')}\n{"half": \n`);
    const damaged = run(['audit', 'verify', '--file', file]);
    expect(damaged.status).toBe(1);
    expect(damaged.stdout).toContain(`${file}:10 is not an audit event`);
    // Eight CLI processes one after another, as the two tests above: seconds each on a loaded machine.
  }, 120_000);
});

// Runs the built CLI: skipped only without a build outside CI (under CI a missing build fails it, as above).
describe.skipIf(!BUILT && !process.env.CI)('pgwarden audit against a collector that cannot be reached', () => {
  it('names the collector and the reason, and exits 2', async () => {
    // A free port: nothing listens there, so the connection is refused.
    const url = `http://127.0.0.1:${await freePort()}`;
    for (const cmd of [['verify'], ['findings'], ['sessions']]) {
      const r = run(['audit', ...cmd, '--collector', url]);
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(`audit ${cmd[0]}: cannot reach the collector at ${url}: ECONNREFUSED\n`);
    }
  });
});
