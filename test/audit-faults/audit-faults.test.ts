import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase } from '../../collector/src/testing/test-database.js';
import { startNats, type TestNats } from '../harness/index.js';
import { ROLES } from '../harness/postgres.js';
import { BIN, BUILT, type Proc, spoolingSidecar, startCli } from './processes.js';

/**
 * Proof that the audit trail loses nothing under faults, with real processes: nats-server, `pgwarden sidecar
 * --audit nats://... --spool-dir`, `pgwarden collector` storing into PostgreSQL. Statements flow while nats-server
 * is SIGKILLed and restarted and the collector is SIGKILLed and restarted; afterwards the store holds exactly one
 * event per statement, no duplicates, and every chain verifies. Altering one stored event must then flag exactly
 * that session. PGWARDEN_SOAK=1 runs the full 10,000 statements with two NATS kills; `make test` runs 1,000 with one.
 */
const SOAK = process.env.PGWARDEN_SOAK === '1';
const STATEMENTS = SOAK ? 10_000 : 1_000;
const SESSIONS = 4;
/** Fractions of the run at which each fault strikes. */
const NATS_KILLS = SOAK ? [0.15, 0.45] : [0.25];
const COLLECTOR_KILL = SOAK ? 0.65 : 0.55;
/** Statements are paced over this long so every fault (kill, pause, restart) lands inside the traffic. */
const RUN_MS = SOAK ? 40_000 : 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Drives the built CLI; `make test` builds first. Without cli/dist there is nothing to run.
// Under CI nothing may be skipped silently: a missing build or browser fails these tests instead.
describe.skipIf(!BUILT && !process.env.CI)('audit under faults: nats-server and collector killed mid-run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audit-faults-'));
  let nats: TestNats | undefined;
  let sidecar: Proc | undefined;
  let collector: Proc | undefined;
  let store: Awaited<ReturnType<typeof createTestDatabase>> | undefined;

  afterAll(async () => {
    await collector?.kill();
    await sidecar?.kill();
    await nats?.stop();
    await store?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    `stores exactly ${STATEMENTS} statement events with intact chains, and flags exactly one altered session`,
    async () => {
      const shared = inject('pg');
      nats = await startNats();
      store = await createTestDatabase(shared, ROLES.superuser);
      const storeEnv = { PGWARDEN_COLLECTOR_STORE: store.url };
      const { port, start: startSidecar } = await spoolingSidecar(
        dir,
        `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
        () => nats!.url,
        ['--ca-file', shared.caFile],
      );

      const startCollector = () =>
        startCli(
          ['collector', '--nats', nats!.url, '--listen', '127.0.0.1:0', '--ack-wait', '3', '--gap-grace', '600'],
          /collector listening on (http:\S+)/,
          storeEnv,
        );
      collector = await startCollector();
      sidecar = await startSidecar();

      let done = 0;
      const faultLog: string[] = [];
      const faults = (async () => {
        const at = async (fraction: number) => {
          while (done < STATEMENTS * fraction) await sleep(5);
        };
        const plan = [
          ...NATS_KILLS.map((f) => ({ f, what: 'nats' as const })),
          { f: COLLECTOR_KILL, what: 'collector' as const },
        ].sort((a, b) => a.f - b.f);
        for (const step of plan) {
          await at(step.f);
          if (step.what === 'nats') {
            await nats!.kill();
            faultLog.push(`nats killed at ${done}`);
            await sleep(1500);
            await nats!.start();
            faultLog.push(`nats restarted at ${done}`);
          } else {
            await collector!.kill();
            faultLog.push(`collector killed at ${done}`);
            await sleep(1000);
            collector = await startCollector();
            faultLog.push(`collector restarted at ${done}`);
          }
        }
      })();

      const per = STATEMENTS / SESSIONS;
      await Promise.all(
        Array.from({ length: SESSIONS }, async (_, s) => {
          const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
          await c.connect();
          const t0 = Date.now();
          for (let i = 0; i < per; i++) {
            const due = t0 + (i * RUN_MS) / per;
            if (due > Date.now()) await sleep(due - Date.now());
            const r = await c.query(`SELECT ${s * per + i} AS n`);
            expect(r.rows[0].n).toBe(s * per + i);
            done++;
          }
          await c.end();
        }),
      );
      await faults;
      const trafficDone = Date.now();
      console.log(`faults: ${faultLog.join('; ')}`);
      expect(faultLog.filter((l) => l.includes('killed')).length).toBe(NATS_KILLS.length + 1);
      // Every kill struck mid-traffic (restarts may land after the last statement).
      for (const line of faultLog.filter((l) => l.includes('killed'))) {
        const n = Number(line.split(' at ')[1]);
        expect(n, line).toBeGreaterThan(0);
        expect(n, line).toBeLessThan(STATEMENTS);
      }

      const db = new pg.Client({ connectionString: store.url });
      await db.connect();
      try {
        const count = async () =>
          (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events WHERE type = 'statement'"))
            .rows[0].n;
        const until = Date.now() + (SOAK ? 180_000 : 90_000);
        while ((await count()) < STATEMENTS && Date.now() < until) await sleep(250);
        console.log(
          `all ${await count()} statement events stored ${Date.now() - trafficDone} ms after the last statement`,
        );
        // The sessions' session.end events follow their last statements; give the tail a moment.
        await sleep(1000);
        const totals = (
          await db.query<{
            statements: number;
            events: number;
            ids: number;
            keys: number;
            sessions: number;
            ended: number;
          }>(
            `SELECT count(*) FILTER (WHERE type = 'statement')::int AS statements, count(*)::int AS events,
                  count(DISTINCT id)::int AS ids, count(DISTINCT (session_id, seq))::int AS keys,
                  count(DISTINCT session_id)::int AS sessions,
                  count(*) FILTER (WHERE type = 'session.end')::int AS ended
           FROM audit_events`,
          )
        ).rows[0];
        // The client sessions, and the sidecar's own chain, whose audit.heads name each session's last event.
        const CHAINS = SESSIONS + 1;
        expect(totals, faultLog.join('; ')).toMatchObject({
          statements: STATEMENTS,
          sessions: CHAINS,
          ended: SESSIONS,
        });
        const positions = async (sql: string) =>
          new Map((await db.query<{ id: string; seq: number }>(sql)).rows.map((r) => [r.id, r.seq]));
        const heads = () =>
          positions(`SELECT c->>'id' AS id, max((c->>'seq')::int) AS seq
             FROM audit_events e, jsonb_array_elements(e.event::jsonb->'heads'->'chains') c
             WHERE e.type = 'audit.heads' GROUP BY 1`);
        const ends = await positions(
          `SELECT session_id AS id, max(seq)::int AS seq FROM audit_events WHERE session_id NOT LIKE 'sidecar-%' GROUP BY 1`,
        );
        // The heads of ended sessions follow within a tick (1 s) of their end, then travel like any event.
        const headsBy = Date.now() + 20_000;
        let named = await heads();
        const same = (a: Map<string, number>, b: Map<string, number>) =>
          a.size === b.size && [...a].every(([id, seq]) => b.get(id) === seq);
        while (!same(named, ends) && Date.now() < headsBy) {
          await sleep(250);
          named = await heads();
        }
        expect(new Map([...named].sort())).toEqual(new Map([...ends].sort()));
        expect(totals.ids).toBe(totals.events);
        expect(totals.keys).toBe(totals.events);
        const chains = (
          await db.query<{ status: string; n: number }>(
            'SELECT status, count(*)::int AS n FROM audit_sessions GROUP BY status',
          )
        ).rows;
        expect(chains).toEqual([{ status: 'ok', n: CHAINS }]);

        const ok = spawnSync(process.execPath, [BIN, 'audit', 'verify', '--store', store.url], { encoding: 'utf8' });
        expect(ok.stdout + ok.stderr).toContain(`verified ${CHAINS} session(s): ${CHAINS} ok, 0 with findings`);
        expect(ok.status).toBe(0);

        // Alter one stored statement: its text now claims something else ran.
        const victim = (
          await db.query<{ id: string; session_id: string }>(
            "SELECT id, session_id FROM audit_events WHERE type = 'statement' ORDER BY random() LIMIT 1",
          )
        ).rows[0];
        await db.query(
          `UPDATE audit_events SET event = jsonb_set(event::jsonb, '{statement,text}', '"SELECT 42"')::text WHERE id = $1`,
          [victim.id],
        );
        const bad = spawnSync(process.execPath, [BIN, 'audit', 'verify', '--store', store.url], { encoding: 'utf8' });
        expect(bad.status).toBe(1);
        expect(bad.stdout).toContain(`verified ${CHAINS} session(s): ${CHAINS - 1} ok, 1 with findings`);
        expect(bad.stdout).toContain(`session ${victim.session_id} `);
        expect(bad.stdout).toMatch(/audit\.tampered seq \d+: event .* content does not match its hash/);
      } finally {
        await db.end();
      }
    },
    SOAK ? 600_000 : 180_000,
  );
});
