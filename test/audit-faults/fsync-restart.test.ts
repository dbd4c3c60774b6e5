import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditEvent } from '@pgwarden/policy';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { type FailingDisk, mountFailingDisk } from '../../sidecar/src/audit/failing-disk.js';
import { freePort } from '../harness/index.js';
import { BUILT, type Proc, spoolingSidecar, startCli } from './processes.js';

/**
 * The sidecar's fdatasync fails (a real kernel writeback failure: failing-disk.ts), and the process is SIGKILLed
 * before its syncs recover, so the running sidecar never got to declare what the failed syncs may have lost. The
 * sidecar started next on the same file or spool must declare it: an `audit.gap` with cause `fsync_failed` naming
 * the session's events written after the last sync that succeeded, once, not again at the start after that. Either
 * the node kept running (its page cache still shows everything), or it crashed: the filesystem is mounted again,
 * so only what the device kept is read, the lost events and the at-risk record's own page cache included.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Events in an audit file (JSON lines) or a spool (`<subject>\t<msgID>\t<event>` lines in segments). */
function trail(target: { file?: string; spool?: string }): AuditEvent[] {
  const lines = target.file
    ? existsSync(target.file)
      ? readFileSync(target.file, 'utf8').split('\n')
      : []
    : readdirSync(target.spool!)
        .filter((f) => f.endsWith('.jsonl'))
        .sort()
        .flatMap((f) => readFileSync(join(target.spool!, f), 'utf8').split('\n'))
        .map((l) => l.split('\t')[2] ?? '');
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as AuditEvent];
    } catch {
      return []; // a torn last line (the kill), or blocks the failed writeback left as zeros
    }
  });
}

const gapsIn = (events: AuditEvent[]) =>
  events.filter((e) => e.type === 'audit.gap' && (e.gap as { cause?: string }).cause === 'fsync_failed');

// Root only (mount, losetup); runs the built CLI in its own processes (as sidecar-kill.test.ts).
describe.skipIf(process.getuid?.() !== 0 || (!BUILT && !process.env.CI))(
  'events a failed fdatasync may have lost, across a sidecar restart',
  () => {
    let disk: FailingDisk | undefined;
    let sidecar: Proc | undefined;
    afterEach(async () => {
      await sidecar?.kill();
      disk?.close();
    });

    for (const [sink, crash] of [
      ['file', false],
      ['spool', false],
      ['file', true],
      ['spool', true],
    ] as const) {
      const name = `${sink === 'file' ? 'file sink' : 'NATS sink spooling'}, ${crash ? 'the node crashes' : 'the sidecar restarts'}`;
      it(`${name}: the next start declares them, once`, async () => {
        disk = mountFailingDisk();
        const shared = inject('pg');
        const upstream = `postgres://${shared.host}:${shared.port}/app?sslmode=disable`;
        // NATS never answers: the NATS sink spools everything, and a clean stop has nothing to wait for it with.
        const nats = `nats://127.0.0.1:${await freePort()}`;
        const spooling = await spoolingSidecar(disk.dir, upstream, () => nats, [
          '--audit-fsync',
          'always',
          '--audit-drain-timeout',
          '0s',
        ]);
        const file = join(disk.dir, 'trail', 'audit.jsonl');
        mkdirSync(join(disk.dir, 'trail'));
        const target = sink === 'file' ? { file } : { spool: spooling.spool };
        const start = () =>
          sink === 'spool'
            ? spooling.start()
            : startCli(
                [
                  'sidecar',
                  '--listen',
                  `127.0.0.1:${spooling.port}`,
                  '--upstream',
                  upstream,
                  '--credentials-dir',
                  join(disk!.dir, 'creds'),
                  '--audit',
                  `file:${file}`,
                  '--audit-fsync',
                  'always',
                  '--http',
                  'off',
                ],
                /sidecar listening/,
              );
        sidecar = await start();
        const client = new pg.Client({ host: '127.0.0.1', port: spooling.port, user: 'agent', database: 'app' });
        client.on('error', () => {});
        await client.connect();
        for (let i = 0; i < 3; i++) await client.query(`SELECT 'before-${i}'`);
        // Every sync so far succeeded (fsync always: before each reply): the events up to here are on disk.
        const synced = trail(target);
        const sessionId = synced.find((e) => e.type === 'session.start')!.session.id;
        const lastSynced = Math.max(...synced.filter((e) => e.session.id === sessionId).map((e) => e.session.seq));

        disk.fill();
        let refused: { code?: string } | undefined;
        for (let i = 0; i < 300 && !refused; i++) {
          await client.query(`SELECT 'during-${i}', repeat('x', 2000)`).catch((e) => {
            refused = e;
          });
          await sleep(5);
        }
        expect(refused).toMatchObject({ code: '53000' });
        // Killed before any sync succeeds again: the running sidecar declared nothing.
        await sidecar.kill();
        await client.end().catch(() => {});
        const before = trail(target);
        expect(gapsIn(before)).toEqual([]);
        const lastWritten = Math.max(...before.filter((e) => e.session.id === sessionId).map((e) => e.session.seq));
        expect(lastWritten).toBeGreaterThan(lastSynced);
        // As a crash of the node leaves it: only what the device kept (the failed writeback's pages are gone).
        if (crash) {
          disk.remount();
          // The newest events were in blocks whose writeback kept failing: the device does not have them.
          const kept = trail(target).filter((e) => e.session.id === sessionId);
          expect(Math.max(...kept.map((e) => e.session.seq))).toBeLessThan(lastWritten);
        }
        disk.free();

        sidecar = await start();
        const until = Date.now() + 15_000;
        while (gapsIn(trail(target)).length === 0 && Date.now() < until) await sleep(50);
        const [gap, ...more] = gapsIn(trail(target));
        expect(more).toEqual([]);
        expect(gap?.gap).toMatchObject({ cause: 'fsync_failed' });
        // The client's session; the sidecar's own chain may be named too (its events went to the same disk).
        const sessions = (gap!.gap as { sessions: { id: string; fromSeq: number; toSeq: number }[] }).sessions;
        expect(sessions.filter((r) => !r.id.startsWith('sidecar-')).map((r) => r.id)).toEqual([sessionId]);
        const range = sessions.find((r) => r.id === sessionId)!;
        // Events the syncs that succeeded covered are not named; those after them, as far as they were written, are.
        expect(range.fromSeq).toBeGreaterThan(lastSynced);
        expect(range.toSeq).toBeLessThanOrEqual(lastWritten);
        expect(range.fromSeq).toBeLessThanOrEqual(range.toSeq);

        // Declared and synced: a clean stop and another start do not declare it again.
        const gapSynced = Date.now() + 5_000;
        while (Date.now() < gapSynced && readFileSync(recordOf(target)).includes('fsync_failed')) await sleep(50);
        await sidecar.stop();
        sidecar = await start();
        await sleep(500);
        await sidecar.stop();
        expect(gapsIn(trail(target))).toHaveLength(1);
      }, 90_000);
    }
  },
);

const recordOf = (target: { file?: string; spool?: string }) =>
  target.file ? `${target.file}.at-risk` : join(target.spool!, 'at-risk');
