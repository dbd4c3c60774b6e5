/**
 * The Helm chart's bundled NATS configuration, run by a real nats-server: only the sidecars' user may publish audit
 * events, and it can do nothing else with the stream; the collector's user consumes; anonymous clients are refused.
 * In the approval queue the sidecars ask and listen, and only the collector answers.
 * The configuration text is what `helm template` renders, so the chart cannot drift from what is tested here.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApprovalNotifier } from '../../collector/src/approvals/approval-notifier.js';
import { approvalClosed, approvalRequest } from '../../collector/src/testing/approval-messages.js';
import { createTestDatabase } from '../../collector/src/testing/test-database.js';
import { renderChart } from '../../operator/src/testing/helm-chart.js';
import {
  APPROVALS_STREAM,
  approvalSubject,
  CONTROL_STREAM,
  natsUserFiles,
  parseApprovalClosed,
  parseApprovalNotified,
  parseApprovalRequest,
  sidecarApprovalSubject,
} from '../../policy/src/index.js';
import { natsApprovalGate } from '../../sidecar/src/governance/nats-approval-gate.js';
import { BIN, BUILT, type Proc, startCli } from '../audit-faults/processes.js';
import { freePort, startNats, type TestNats } from '../harness/index.js';
import { ROLES } from '../harness/postgres.js';

const USERS = {
  SIDECAR_USER: 'sidecar',
  SIDECAR_PASSWORD: 'sidecar-pw-7f3a',
  COLLECTOR_USER: 'collector',
  COLLECTOR_PASSWORD: 'collector-pw-91bc',
};

let nats: TestNats;
const dir = mkdtempSync(join(tmpdir(), 'pgwarden-nats-auth-'));
const procs: Proc[] = [];

async function chartNatsConfig(values: unknown = {}): Promise<string> {
  const cm = (await renderChart(values)).find(
    (o: any) => o.kind === 'ConfigMap' && o.metadata.name === 'pgw-pgwarden-nats-config',
  );
  if (!cm) throw new Error('the chart renders no NATS ConfigMap');
  return cm.data['nats.conf'];
}

beforeAll(async () => {
  nats = await startNats({ config: await chartNatsConfig(), env: USERS });
}, 120_000);
afterAll(async () => {
  for (const p of procs) await p.kill();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A directory holding `username` and `password` files, as a mounted Secret does (with kubectl's trailing newline). */
function userDir(name: string, user: string, pass: string): string {
  const d = join(dir, name);
  mkdirSync(d);
  writeFileSync(join(d, 'username'), `${user}\n`);
  writeFileSync(join(d, 'password'), `${pass}\n`);
  return d;
}

/**
 * A fresh approvals signing key (`pgwarden approvals keygen`) and a policy file `jobs` in namespace `agents` on the
 * shared cluster's database `database`, listening on `port`; `spec` adds to it, given the key's public half.
 */
function signedJobsPolicy(tag: string, database: string, port: number, spec: (decisionKey: string) => object) {
  const shared = inject('pg');
  const signingKeyFile = join(dir, `${tag}-signing.pem`);
  const decisionKey = execFileSync(process.execPath, [BIN, 'approvals', 'keygen', '--out', signingKeyFile], {
    encoding: 'utf8',
  });
  const policyFile = join(dir, `${tag}-policy.json`);
  writeFileSync(
    policyFile,
    JSON.stringify({
      apiVersion: 'pgwarden.dev/v1alpha1',
      kind: 'DatabaseAccessPolicy',
      metadata: { name: 'jobs', namespace: 'agents' },
      spec: {
        database: { host: shared.host, port: shared.port, name: database, sslMode: 'verify-full' },
        listen: { port },
        ...spec(decisionKey),
      },
    }),
  );
  return { signingKeyFile, decisionKey, policyFile };
}

/**
 * `pgwarden collector` (the chart's collector NATS user, an approvers file with one approver holding a fresh token,
 * the approvals signing key) and `pgwarden sidecar` (the sidecars' user, auditing to NATS) on this file's NATS.
 * `tag` keeps each test's files apart.
 */
async function startCollectorAndSidecar(
  tag: string,
  opts: { policyFile: string; signingKeyFile: string; approver: string; storeUrl: string; caFile: string },
) {
  // Collectors share the audit stream's durable consumer: one an earlier test left running would take part of
  // this test's events into its own store.
  for (const p of procs.splice(0)) await p.kill();
  const token = `${opts.approver}-${randomUUID()}`;
  const approversFile = join(dir, `${tag}-approvers.yaml`);
  const sha = createHash('sha256').update(token).digest('hex');
  writeFileSync(approversFile, `- name: ${opts.approver}\n  groups: [dba]\n  tokenSha256: ${sha}\n`);
  const collector = await startCli(
    [
      'collector',
      '--nats',
      nats.url,
      '--nats-credentials-dir',
      userDir(`collector-${tag}`, USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD),
    ]
      .concat(['--listen', '127.0.0.1:0', '--approvers-file', approversFile])
      .concat(['--approvals-signing-key', opts.signingKeyFile]),
    /collector listening on (http:\S+)/,
    { PGWARDEN_COLLECTOR_STORE: opts.storeUrl },
  );
  procs.push(collector);
  const sidecar = await startCli(
    ['sidecar', '--policy', opts.policyFile, '--ca-file', opts.caFile]
      .concat(['--credentials-dir', userDir(`db-${tag}`, ROLES.scram.user, ROLES.scram.password)])
      .concat([
        '--audit',
        nats.url,
        '--audit-nats-credentials-dir',
        userDir(`sidecar-${tag}`, USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD),
      ])
      .concat(['--spool-dir', join(dir, `spool-${tag}`), '--http', 'off']),
    /sidecar listening/,
  );
  procs.push(sidecar);
  return {
    token,
    api: collector.match[1],
    collector,
    sidecar,
    logs: () => `${collector.output().slice(-2000)}\n${sidecar.output().slice(-2000)}`,
  };
}

/** What the sidecar asks the approval gate for a held statement of a policy in `namespace` (signal left to the caller). */
const gateRequest = (id: string, namespace: string) => ({
  id,
  sessionId: `sess-${id}`,
  policy: { name: 'writer', hash: 'sha256:abc', namespace },
  approvers: { users: ['alice'] },
  rule: 'review',
  sql: 'DELETE FROM orders WHERE id = 7',
  identity: { namespace },
  timeoutMs: 10_000,
});

const as = (user: string, pass: string) => connect({ servers: nats.url, user, pass, reconnect: false });

describe('bundled NATS authorization (charts/pgwarden/templates/nats-auth.yaml)', () => {
  it('refuses anonymous clients and wrong passwords', async () => {
    await expect(connect({ servers: nats.url, reconnect: false })).rejects.toThrow(/Authorization Violation/i);
    await expect(as('sidecar', 'guess')).rejects.toThrow(/Authorization Violation/i);
  });

  it('lets the sidecar user create the stream and publish, and nothing else', async () => {
    const nc = await as(USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: 'PGWARDEN_AUDIT', subjects: ['pgwarden.audit.>'] });
      const ack = await jetstream(nc).publish('pgwarden.audit.agents.a', '{"id":"s.1"}', { msgID: 's.1' });
      expect(ack.seq).toBe(1);
      // Not allowed: deleting or purging the evidence, reading other sessions' events, creating consumers.
      await expect(jsm.streams.purge('PGWARDEN_AUDIT')).rejects.toThrow();
      await expect(jsm.streams.delete('PGWARDEN_AUDIT')).rejects.toThrow();
      await expect(
        jsm.consumers.add('PGWARDEN_AUDIT', { durable_name: 'spy', ack_policy: AckPolicy.Explicit }),
      ).rejects.toThrow();
      const errors: Error[] = [];
      const watcher = (async () => {
        for await (const s of nc.status()) if (s.type === 'error') errors.push((s as any).error);
      })();
      nc.subscribe('pgwarden.audit.>');
      nc.publish('other.subject', 'x');
      await nc.flush();
      await new Promise((r) => setTimeout(r, 200));
      expect(errors.map((e) => e.message).join('\n')).toMatch(
        /Permissions Violation for Subscription to "pgwarden\.audit\.>"/,
      );
      expect(errors.map((e) => e.message).join('\n')).toMatch(/Permissions Violation for Publish to "other\.subject"/);
      void watcher;
    } finally {
      await nc.close().catch(() => {});
    }
    const admin = await as(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
    try {
      expect((await (await jetstreamManager(admin)).streams.info('PGWARDEN_AUDIT')).state.messages).toBe(1);
    } finally {
      await admin.close();
    }
  });

  it('lets the collector user consume with explicit acks, but not publish audit events', async () => {
    const nc = await as(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.consumers.add('PGWARDEN_AUDIT', { durable_name: 'c', ack_policy: AckPolicy.Explicit });
      const consumer = await jetstream(nc).consumers.get('PGWARDEN_AUDIT', 'c');
      const m = await consumer.next({ expires: 5000 });
      expect(m?.string()).toBe('{"id":"s.1"}');
      expect(await m!.ackAck()).toBe(true);
      await expect(jetstream(nc).publish('pgwarden.audit.agents.a', '{"id":"forged"}')).rejects.toThrow();
    } finally {
      await nc.close();
    }
  });

  it('carries an approval: the sidecar user asks and hears the answer, only the collector user can answer', async () => {
    const sidecar = await as(USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
    const collector = await as(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
    try {
      // The collector creates the queue's stream (the sidecar's user may not).
      const jsm = await jetstreamManager(collector);
      await jsm.streams.add({ name: APPROVALS_STREAM, subjects: ['pgwarden.approval.>'], allow_direct: true });
      await expect(
        (await jetstreamManager(sidecar)).streams.add({ name: 'PGWARDEN_APPROVALS_2', subjects: ['x.>'] }),
      ).rejects.toThrow();

      const errors: string[] = [];
      void (async () => {
        for await (const st of sidecar.status()) if (st.type === 'error') errors.push(String((st as any).error));
      })();
      const gate = natsApprovalGate({ connection: () => sidecar });
      const id = randomUUID();
      const outcome = gate.request({
        id,
        sessionId: 'sess-1',
        policy: { name: 'writer', hash: 'sha256:x' },
        approvers: { users: ['alice'] },
        rule: 'deletes-need-review',
        sql: "DELETE FROM orders WHERE id = 1; ALTER ROLE x PASSWORD 'hunter2'",
        identity: { groups: ['agents'], user: 'bot' },
        timeoutMs: 10_000,
        signal: new AbortController().signal,
      });
      // A forged decision from the sidecar's user is refused by the server and never reaches the gate.
      sidecar.publish(approvalSubject('decision', id), JSON.stringify({ v: 1, id, decision: 'approved' }));
      await sidecar.flush();

      const consumer = await jetstream(collector).consumers.get(APPROVALS_STREAM);
      const m = await consumer.next({ expires: 5000 });
      const request = parseApprovalRequest(m!.data);
      expect(request).toMatchObject({ id, rule: 'deletes-need-review', approvers: { users: ['alice'] } });
      expect(request!.sql).not.toContain('hunter2');
      await jetstream(collector).publish(
        approvalSubject('decision', id),
        JSON.stringify({
          v: 1,
          id,
          decision: 'approved',
          by: { name: 'alice', groups: [] },
          at: new Date().toISOString(),
        }),
      );
      expect(await outcome).toEqual({ decision: 'approved', by: 'alice' });
      // The stream keeps the decision, then what the sidecar did with it.
      expect((await consumer.next({ expires: 5000 }))?.subject).toBe(approvalSubject('decision', id));
      const closed = await consumer.next({ expires: 5000 });
      expect(parseApprovalClosed(closed!.data)).toMatchObject({ id, outcome: 'approved', by: { name: 'alice' } });
      // A sidecar may read back decisions (after a reconnect), not other statements' requests.
      const sjsm = await jetstreamManager(sidecar, { checkAPI: false });
      const readBack = await sjsm.direct.getMessage(APPROVALS_STREAM, {
        last_by_subj: approvalSubject('decision', id),
      });
      expect(readBack?.subject).toBe(approvalSubject('decision', id));
      await expect(
        sjsm.direct.getMessage(APPROVALS_STREAM, { last_by_subj: sidecarApprovalSubject('request', undefined, id) }),
      ).rejects.toThrow();
      expect(errors.join('\n')).toMatch(/Permissions Violation for Publish to "pgwarden\.approval\.decision\./);
      // Grants: only the collector revokes; sidecars hear revocations and read them back.
      const heard = sidecar.subscribe(approvalSubject('revoked', '*'), { max: 1 });
      await sidecar.flush();
      sidecar.publish(approvalSubject('revoked', id), JSON.stringify({ v: 1, id, forged: true }));
      await sidecar.flush();
      const revocation = { v: 1, id, by: { name: 'alice', groups: [] }, at: new Date().toISOString() };
      await jetstream(collector).publish(approvalSubject('revoked', id), JSON.stringify(revocation));
      for await (const msg of heard) expect(JSON.parse(msg.string())).toEqual(revocation);
      const revokedBack = await sjsm.direct.getMessage(APPROVALS_STREAM, {
        last_by_subj: approvalSubject('revoked', id),
      });
      expect(JSON.parse(revokedBack!.string())).toEqual(revocation);
      expect(errors.join('\n')).toMatch(/Permissions Violation for Publish to "pgwarden\.approval\.revoked\./);
    } finally {
      await sidecar.close().catch(() => {});
      await collector.close().catch(() => {});
    }
  });

  it('lets the collector user announce held statements and their ends through its shared consumers, acking and retrying', async () => {
    const posts: string[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => res.writeHead(posts.push(body) === 1 ? 503 : 200).end());
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const notifier = new ApprovalNotifier({
      nats: {
        url: nats.url,
        userFiles: natsUserFiles(userDir('notifier', USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD)),
      },
      webhook: {
        url: new URL(`http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`),
        format: 'json',
        includeSql: false,
      },
      retry: { baseDelayMs: 50 },
    });
    const outcomes: string[] = [];
    notifier.on('notified', (outcome) => outcomes.push(outcome));
    const sidecar = await as(USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
    const collector = await as(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
    try {
      notifier.start();
      const until = Date.now() + 15_000;
      while (!notifier.ready && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(notifier.ready).toBe(true);
      const request = approvalRequest();
      await jetstream(sidecar).publish(
        sidecarApprovalSubject('request', request.policy.namespace, request.id),
        JSON.stringify(request),
      );
      while (outcomes.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      // The 503 was negatively acknowledged with a delay, the 200 acknowledged: both go to $JS.ACK.PGWARDEN_APPROVALS.
      expect(outcomes).toEqual(['retried', 'sent']);
      expect(posts).toHaveLength(2);
      // The collector user records in the stream that the request was announced; a sidecar's user cannot forge that.
      const jsm0 = await jetstreamManager(collector);
      const recorded = async () =>
        jsm0.direct.getMessage(APPROVALS_STREAM, { last_by_subj: approvalSubject('notified', request.id) });
      let record = await recorded().catch(() => null);
      while (!record && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        record = await recorded().catch(() => null);
      }
      expect(parseApprovalNotified(record!.data)).toMatchObject({ v: 1, id: request.id });
      const forged = jetstream(sidecar, { timeout: 2000 }).publish(
        approvalSubject('notified', request.id),
        JSON.stringify({ v: 1, id: request.id, at: new Date().toISOString() }),
      );
      await expect(forged).rejects.toThrow();
      // The sidecar ends the hold; the follow-up comes through the second consumer, acknowledged the same way.
      await jetstream(sidecar).publish(
        sidecarApprovalSubject('closed', request.policy.namespace, request.id),
        JSON.stringify(approvalClosed(request.id, 'withdrawn')),
      );
      while (outcomes.length < 3 && Date.now() < until + 10_000) await new Promise((r) => setTimeout(r, 50));
      expect(outcomes).toEqual(['retried', 'sent', 'sent']);
      expect(JSON.parse(posts[2])).toMatchObject({ type: 'approval.closed', id: request.id, outcome: 'withdrawn' });
      const jsm = await jetstreamManager(collector);
      for (const durable of ['pgwarden-approval-notifier', 'pgwarden-approval-outcomes']) {
        const info = await jsm.consumers.info(APPROVALS_STREAM, durable);
        expect([durable, info.num_ack_pending, info.num_pending]).toEqual([durable, 0, 0]);
      }
    } finally {
      await notifier.close();
      await sidecar.close().catch(() => {});
      await collector.close().catch(() => {});
      await new Promise((r) => receiver.close(r));
    }
  });

  // Drives the built CLI (`make test` builds first); under CI a missing build fails instead of skipping.
  it.skipIf(!BUILT && !process.env.CI)(
    'carries signed statements from `pgwarden sidecar` to `pgwarden collector` with each one’s credentials directory',
    async () => {
      const shared = inject('pg');
      const store = await createTestDatabase(shared, ROLES.superuser);
      try {
        // Signed checkpoints end to end: the key from `pgwarden audit keygen`, its printed entry as the collector's
        // keys file, and a collector that fails verification for any ended session not fully signed.
        const signingKey = join(dir, 'audit-signing.pem');
        const keygen = execFileSync(process.execPath, [BIN, 'audit', 'keygen', '--out', signingKey, '--name', 'e2e'], {
          encoding: 'utf8',
        });
        const entry = keygen.split('\n').find((l) => l.startsWith('- {'));
        expect(entry).toBeDefined();
        // The collector signs its own chain (its reads of the trail) with a key of its own: --require-signed-audit
        // holds that chain to signatures too, and the e2e key, limited to no namespace, covers it.
        const collectorKey = join(dir, 'collector-signing.pem');
        const collectorEntry = execFileSync(
          process.execPath,
          [BIN, 'audit', 'keygen', '--out', collectorKey, '--name', 'collector'],
          { encoding: 'utf8' },
        )
          .split('\n')
          .find((l) => l.startsWith('- {'));
        const keysFile = join(dir, 'audit-keys.yaml');
        writeFileSync(keysFile, `keys:\n  ${entry}\n  ${collectorEntry}\n`);
        const creds = userDir('db', ROLES.scram.user, ROLES.scram.password);
        const sidecarUser = userDir('sidecar', USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
        const collectorUser = userDir('collector', USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
        const port = await freePort();
        const sidecar = await startCli(
          [
            'sidecar',
            '--listen',
            `127.0.0.1:${port}`,
            '--upstream',
            `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
            '--ca-file',
            shared.caFile,
            '--credentials-dir',
            creds,
            '--audit',
            nats.url,
            '--audit-nats-credentials-dir',
            sidecarUser,
            '--audit-fail-mode',
            'closed',
            '--spool-dir',
            join(dir, 'spool'),
            '--http',
            'off',
            '--audit-signing-key',
            signingKey,
            '--audit-checkpoint-interval',
            '100ms',
          ],
          /sidecar listening/,
        );
        procs.push(sidecar);
        const collector = await startCli(
          [
            'collector',
            '--nats',
            nats.url,
            '--nats-credentials-dir',
            collectorUser,
            '--listen',
            '127.0.0.1:0',
            '--audit-keys',
            keysFile,
            '--require-signed-audit',
            '--audit-signing-key',
            collectorKey,
            // Sessions younger than the grace are not yet held to --require-signed-audit; this one is.
            '--gap-grace',
            '0',
          ],
          /collector listening on (http:\S+)/,
          { PGWARDEN_COLLECTOR_STORE: store.url },
        );
        procs.push(collector);
        const api = collector.match[1];
        const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
        await c.connect();
        for (let i = 0; i < 5; i++) expect((await c.query(`SELECT ${i} AS n`)).rows[0].n).toBe(i);
        await c.end();
        const until = Date.now() + 20_000;
        let statements = 0;
        while (Date.now() < until) {
          const r = await (await fetch(`${api}/api/v1/events?decision=allow`)).json();
          statements = r.items.filter((e: any) => /^SELECT \d AS n$/.test(e.statement?.text ?? '')).length;
          if (statements === 5) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(statements, `${collector.output().slice(-2000)}\n${sidecar.output().slice(-2000)}`).toBe(5);
        // The session ended with session.end and the sidecar's final checkpoint after it: fully signed by `e2e`.
        let session: any;
        while (Date.now() < until) {
          const r = await (await fetch(`${api}/api/v1/sessions`)).json();
          session = r.items.find((x: any) => x.signature === 'signed' && x.signedBy === 'e2e');
          if (session) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(session, JSON.stringify(await (await fetch(`${api}/api/v1/sessions`)).json())).toMatchObject({
          signature: 'signed',
          signedBy: 'e2e',
          unsignedEvents: 0,
        });
        const verify = await (await fetch(`${api}/api/v1/verify`, { method: 'POST', body: '{}' })).json();
        expect(verify).toMatchObject({ ok: true, failed: [] });
        expect(verify.signatures.signed).toBeGreaterThanOrEqual(1);
        expect(verify.signatures.unverified).toBe(0);
        // The private keys are in neither process's output.
        for (const key of [signingKey, collectorKey]) {
          const keyBody = readFileSync(key, 'utf8').split('\n')[1];
          for (const p of [sidecar, collector]) expect(p.output()).not.toContain(keyBody);
        }
        // Neither process printed a password.
        for (const p of [sidecar, collector]) {
          expect(p.output()).not.toContain(USERS.SIDECAR_PASSWORD);
          expect(p.output()).not.toContain(USERS.COLLECTOR_PASSWORD);
        }
        // Stopped now: the next test's collector uses the same durable consumer, and would otherwise share the
        // stream's messages with this one. Stopping, the collector signs its chain of reads a last time.
        for (const p of [sidecar, collector]) await p.stop();
        const db = new pg.Client({ connectionString: store.url });
        await db.connect();
        try {
          const { rows } = await db.query(
            "SELECT type FROM audit_events WHERE session_id LIKE 'collector-%' ORDER BY seq DESC LIMIT 1",
          );
          expect(rows).toEqual([{ type: 'audit.checkpoint' }]);
        } finally {
          await db.end();
        }
      } finally {
        await store.drop();
      }
    },
    60_000,
  );

  // The whole approval path with real processes, each with its own NATS user, as the chart deploys them.
  it.skipIf(!BUILT && !process.env.CI)(
    'holds a DELETE from `pgwarden sidecar` until `pgwarden approvals approve`, through `pgwarden collector`',
    async () => {
      const shared = inject('pg');
      const store = await createTestDatabase(shared, ROLES.superuser);
      const app = await createTestDatabase(shared, ROLES.superuser);
      const su = new pg.Client({
        ...shared,
        user: ROLES.superuser.user,
        password: ROLES.superuser.password,
        database: app.name,
      });
      try {
        await su.connect();
        await su.query('CREATE TABLE jobs (id int PRIMARY KEY); INSERT INTO jobs VALUES (1), (2), (3)');
        await su.query(`GRANT SELECT, DELETE ON jobs TO ${ROLES.scram.user}`);
        const port = await freePort();
        const { signingKeyFile, decisionKey, policyFile } = signedJobsPolicy('ap', app.name, port, (key) => ({
          rules: [
            { name: 'read', action: 'allow', statements: ['select'] },
            { name: 'deletes-need-review', action: 'review', statements: ['delete'], tables: ['public.jobs'] },
          ],
          // Only decisions the collector's key signed count (its public key from `pgwarden approvals keygen`).
          approval: { timeout: '60s', approvers: { users: ['dana'] }, decisionKeys: [key] },
        }));
        expect(decisionKey).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/);
        const { token, api, collector, sidecar, logs } = await startCollectorAndSidecar('ap', {
          policyFile,
          signingKeyFile,
          approver: 'dana',
          storeUrl: store.url,
          caFile: shared.caFile,
        });

        const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
        await c.connect();
        const pending = c.query('DELETE FROM jobs WHERE id = 2');
        const auth = { authorization: `Bearer ${token}` };
        let id = '';
        for (let i = 0; i < 200 && !id; i++) {
          const r = (await (await fetch(`${api}/api/v1/approvals`, { headers: auth })).json()) as any;
          id = r.approvals?.find((a: any) => a.request.sql === 'DELETE FROM jobs WHERE id = 2')?.id ?? '';
          if (!id) await new Promise((res) => setTimeout(res, 50));
        }
        expect(id, logs()).toMatch(/^[0-9a-f-]{36}$/);
        expect((await su.query('SELECT count(*)::int AS n FROM jobs')).rows[0].n).toBe(3); // held, not run

        const approve = execFileSync(process.execPath, [BIN, 'approvals', 'approve', id, '--collector', api], {
          env: { ...process.env, PGWARDEN_APPROVER_TOKEN: token },
          encoding: 'utf8',
        });
        expect(approve).toContain(id);
        expect((await pending).rowCount).toBe(1);
        expect((await su.query('SELECT array_agg(id ORDER BY id) AS ids FROM jobs')).rows[0].ids).toEqual([1, 3]);
        await c.end();

        // The session's audit chain names the approver under the queue's id, and the queue shows what happened.
        let granted: any;
        // Up to 30 s: under `make test` every suite shares two cores with these three processes.
        for (let i = 0; i < 600 && !granted; i++) {
          const r = (await (await fetch(`${api}/api/v1/events?type=approval.granted`)).json()) as any;
          granted = r.items.find((e: any) => e.approval?.id === id);
          if (!granted) await new Promise((res) => setTimeout(res, 50));
        }
        expect(granted?.approval, logs()).toMatchObject({ id, approver: 'dana' });
        let state = '';
        for (let i = 0; i < 100 && state !== 'approved'; i++) {
          state = ((await (await fetch(`${api}/api/v1/approvals/${id}`, { headers: auth })).json()) as any).state;
          if (state !== 'approved') await new Promise((res) => setTimeout(res, 50));
        }
        expect(state).toBe('approved');
        for (const p of [sidecar, collector]) expect(p.output()).not.toContain(token);
      } finally {
        await su.end().catch(() => {});
        await store.drop();
        await app.drop();
      }
    },
    90_000,
  );
});

describe.skipIf(!BUILT && !process.env.CI)('live control through the real processes', () => {
  it('ends a session and suspends a policy from `pgwarden control`, through `pgwarden collector` and `pgwarden sidecar`', async () => {
    const shared = inject('pg');
    const store = await createTestDatabase(shared, ROLES.superuser);
    const app = await createTestDatabase(shared, ROLES.superuser);
    try {
      const port = await freePort();
      const { signingKeyFile, policyFile } = signedJobsPolicy('ctl', app.name, port, (key) => ({
        rules: [{ name: 'read', action: 'allow', statements: ['select'] }],
        guardrails: { blockedFunctions: [] },
        // Control messages count only when the collector's key signed them.
        approval: { decisionKeys: [key] },
      }));
      const { token, api, collector, sidecar, logs } = await startCollectorAndSidecar('ctl', {
        policyFile,
        signingKeyFile,
        approver: 'erin',
        storeUrl: store.url,
        caFile: shared.caFile,
      });
      const control = (...args: string[]) =>
        execFileSync(process.execPath, [BIN, 'control', ...args, '--collector', api], {
          env: { ...process.env, PGWARDEN_APPROVER_TOKEN: token },
          encoding: 'utf8',
        });
      const poll = async <T>(read: () => Promise<T>, ok: (v: T) => boolean): Promise<T> => {
        let v = await read();
        // Up to 30 s: under `make test` every suite shares two cores with these processes.
        for (let i = 0; i < 600 && !ok(v); i++) {
          await new Promise((res) => setTimeout(res, 50));
          v = await read();
        }
        return v;
      };
      const events = async (type: string) =>
        ((await (await fetch(`${api}/api/v1/events?type=${type}`)).json()) as any).items as any[];
      const connectAgent = async () => {
        const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
        c.on('error', () => {});
        await c.connect();
        return c;
      };

      // terminate: the agent's running statement ends with 57P01, naming who and why.
      const c = await connectAgent();
      const running = c.query('SELECT pg_sleep(30)').then(
        () => undefined,
        (err: Error & { code?: string }) => err,
      );
      // The collector reads the audit stream from its start, earlier tests' sessions included: this one is the
      // session on this test's own database.
      const mine = async () => (await events('session.start')).filter((e) => e.database?.name === app.name);
      const starts = await poll(mine, (items) => items.length > 0);
      expect(starts, logs()).toHaveLength(1);
      const session = starts[0].session.id as string;
      // The command waits until the sidecar's control.applied reaches the collector, and says so.
      expect(control('terminate', session, '--reason', 'runaway agent')).toMatch(
        new RegExp(
          `^terminate ${session} published as erin \\(control [0-9a-f-]{36}, signed\\).*\\napplied by \\S+: ended 1 session\\n$`,
        ),
      );
      const ended = await running;
      expect(ended, logs()).toMatchObject({
        code: '57P01',
        message: 'terminating connection due to administrator command: ended by erin through pgwarden: runaway agent',
      });

      // suspend: logins are refused until resume.
      expect(control('suspend', 'agents/jobs', '--reason', 'incident 7')).toMatch(
        /\napplied by \S+: ended 0 sessions\n$/,
      );
      const refused = await poll(
        () =>
          connectAgent().then(
            (x) => x.end().then(() => undefined),
            (err: Error & { code?: string }) => err,
          ),
        (err) => err !== undefined,
      );
      expect(refused, logs()).toMatchObject({ code: '28000' });
      expect(control('list')).toMatch(/agents\/jobs\s+.*erin\s+yes\s+incident 7/);
      control('resume', 'agents/jobs', '--reason', 'incident 7 over');
      const back = await poll(
        () =>
          connectAgent().then(
            async (x) => {
              const r = await x.query('SELECT 1 AS one');
              await x.end();
              return r.rows[0].one as number;
            },
            () => 0,
          ),
        (n) => n === 1,
      );
      expect(back, logs()).toBe(1);
      expect(control('list')).not.toContain('incident 7');

      // The sidecar's chain records each action it applied, signed, as stored and verified by the collector.
      const applied = await poll(
        () => events('control.applied'),
        (items) => items.length === 3,
      );
      expect(
        applied.map((e) => [e.control.kind, e.control.by, e.control.signed]),
        logs(),
      ).toEqual(
        expect.arrayContaining([
          ['terminate', 'erin', true],
          ['suspend', 'erin', true],
          ['resume', 'erin', true],
        ]),
      );
      expect(applied.find((e) => e.control.kind === 'terminate').control).toMatchObject({
        session,
        sessionsEnded: 1,
      });
      for (const p of [sidecar, collector]) expect(p.output()).not.toContain(token);
    } finally {
      await store.drop();
      await app.drop();
    }
  }, 90_000);
});

describe('per-namespace NATS users (audit.namespaceUsers)', () => {
  it('lets a namespace’s own user publish audit events for that namespace only, and still ask for approvals', async () => {
    const own = { SIDECAR_USER_0: 'sidecar-team-a', SIDECAR_PASSWORD_0: 'team-a-pw-5c1d' };
    const server = await startNats({
      config: await chartNatsConfig({ audit: { namespaceUsers: ['team-a'] } }),
      env: { ...USERS, ...own },
    });
    const connectAs = (user: string, pass: string) => connect({ servers: server.url, user, pass, reconnect: false });
    try {
      const admin = await connectAs(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
      await (await jetstreamManager(admin)).streams.add({ name: 'PGWARDEN_AUDIT', subjects: ['pgwarden.audit.>'] });
      await (await jetstreamManager(admin)).streams.add({
        name: APPROVALS_STREAM,
        subjects: ['pgwarden.approval.>'],
        allow_direct: true,
      });
      const nc = await connectAs(own.SIDECAR_USER_0, own.SIDECAR_PASSWORD_0);
      const errors: string[] = [];
      void (async () => {
        for await (const st of nc.status()) if (st.type === 'error') errors.push(String((st as any).error?.message));
      })();
      const js = jetstream(nc, { timeout: 2000 });
      expect((await js.publish('pgwarden.audit.team-a.writer', '{"id":"a.1"}', { msgID: 'a.1' })).seq).toBe(1);
      // Another namespace's subject: refused by the server, so JetStream never stores it.
      await expect(js.publish('pgwarden.audit.agents.writer', '{"id":"b.1"}', { msgID: 'b.1' })).rejects.toThrow();
      await nc.flush();
      await new Promise((r) => setTimeout(r, 200));
      expect(errors.join('\n')).toMatch(/Permissions Violation for Publish to "pgwarden\.audit\.agents\.writer"/);
      const id = randomUUID();
      expect((await js.publish(sidecarApprovalSubject('request', 'team-a', id), '{}')).seq).toBeGreaterThan(0);
      expect((await (await jetstreamManager(admin)).streams.info('PGWARDEN_AUDIT')).state.messages).toBe(1);
      // The shared sidecar user is still there for namespaces not listed.
      const shared = await connectAs(USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
      expect(
        (await jetstream(shared).publish('pgwarden.audit.agents.writer', '{"id":"c.1"}', { msgID: 'c.1' })).seq,
      ).toBe(2);
      await shared.close();
      await nc.close();
      await admin.close();
    } finally {
      await server.stop();
    }
  });

  it('holds a namespace’s user to its own approval requests and closings: another namespace’s are refused by NATS', async () => {
    const own = { SIDECAR_USER_0: 'sidecar-team-a', SIDECAR_PASSWORD_0: 'team-a-pw-5c1d' };
    const server = await startNats({
      config: await chartNatsConfig({ audit: { namespaceUsers: ['team-a'] } }),
      env: { ...USERS, ...own },
    });
    const connectAs = (user: string, pass: string) => connect({ servers: server.url, user, pass, reconnect: false });
    try {
      const admin = await connectAs(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
      const jsm = await jetstreamManager(admin);
      await jsm.streams.add({ name: APPROVALS_STREAM, subjects: ['pgwarden.approval.>'], allow_direct: true });
      /** Messages stored on subjects matching `filter`. */
      const stored = async (filter: string) => {
        const { subjects } = (await jsm.streams.info(APPROVALS_STREAM, { subjects_filter: filter })).state;
        return Object.values(subjects ?? {}).reduce((n, c) => n + c, 0);
      };

      // The sidecar's own gate, as team-a's user: its request and its closing are on subjects the user may use.
      const teamA = await connectAs(own.SIDECAR_USER_0, own.SIDECAR_PASSWORD_0);
      const errors: string[] = [];
      void (async () => {
        for await (const st of teamA.status()) if (st.type === 'error') errors.push(String((st as any).error?.message));
      })();
      const gate = natsApprovalGate({ connection: () => teamA, publishTimeoutMs: 2000 });
      const ended = new AbortController();
      const mine = randomUUID();
      const outcome = gate.request({
        ...gateRequest(mine, 'team-a'),
        signal: ended.signal,
      });
      await expect.poll(() => stored(sidecarApprovalSubject('request', 'team-a', mine))).toBe(1);
      ended.abort();
      expect(await outcome).toEqual({ decision: 'timeout' });
      await expect.poll(() => stored(sidecarApprovalSubject('closed', 'team-a', mine))).toBe(1);

      // Namespace agents' request, whose id team-a learned: closing it under agents, or on the subject without a
      // namespace that earlier sidecars used, is refused by the server, so JetStream never stores it.
      const theirs = randomUUID();
      const shared = await connectAs(USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
      const sjs = jetstream(shared, { timeout: 2000 });
      await sjs.publish(
        sidecarApprovalSubject('request', 'agents', theirs),
        JSON.stringify(approvalRequest({ id: theirs })),
      );
      const js = jetstream(teamA, { timeout: 2000 });
      const forged = JSON.stringify(approvalClosed(theirs, 'withdrawn'));
      for (const subject of [
        sidecarApprovalSubject('closed', 'agents', theirs),
        approvalSubject('closed', theirs),
        sidecarApprovalSubject('request', 'agents', randomUUID()),
        approvalSubject('request', randomUUID()),
      ]) {
        await expect(js.publish(subject, forged), subject).rejects.toThrow();
        await teamA.flush();
        await expect.poll(() => errors.join('\n')).toContain(`Permissions Violation for Publish to "${subject}"`);
      }
      expect(await stored('pgwarden.approval.closed.>')).toBe(1);
      expect(await stored(sidecarApprovalSubject('closed', 'agents', theirs))).toBe(0);
      // The shared user (namespaces without their own) may still close any namespace's: the collector holds it to
      // the request's namespace (ApprovalBook.closingFits).
      expect((await sjs.publish(sidecarApprovalSubject('closed', 'agents', theirs), forged)).seq).toBeGreaterThan(0);
      await shared.close();
      await teamA.close();
      await admin.close();
    } finally {
      await server.stop();
    }
  });

  it('carries live control: only the collector publishes it; a namespace’s user hears its own policies and any session', async () => {
    const own = { SIDECAR_USER_0: 'sidecar-team-a', SIDECAR_PASSWORD_0: 'team-a-pw-5c1d' };
    const server = await startNats({
      config: await chartNatsConfig({ audit: { namespaceUsers: ['team-a'] } }),
      env: { ...USERS, ...own },
    });
    const connectAs = (user: string, pass: string) => connect({ servers: server.url, user, pass, reconnect: false });
    try {
      const admin = await connectAs(USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD);
      await (await jetstreamManager(admin)).streams.add({
        name: CONTROL_STREAM,
        subjects: ['pgwarden.control.>'],
        max_msgs_per_subject: 1,
        allow_direct: true,
      });
      const nc = await connectAs(own.SIDECAR_USER_0, own.SIDECAR_PASSWORD_0);
      const shared = await connectAs(USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD);
      const errors: string[] = [];
      for (const c of [nc, shared])
        void (async () => {
          for await (const st of c.status()) if (st.type === 'error') errors.push(String((st as any).error?.message));
        })();
      const session = `pgwarden.control.session.${randomUUID()}`;
      const heard: string[] = [];
      for (const subject of [session, 'pgwarden.control.policy.team-a.writer']) {
        const sub = nc.subscribe(subject);
        void (async () => {
          for await (const m of sub) heard.push(m.subject);
        })();
      }
      await nc.flush();
      const cjs = jetstream(admin);
      await cjs.publish(session, '{}');
      await cjs.publish('pgwarden.control.policy.team-a.writer', '{}');
      await cjs.publish('pgwarden.control.policy.agents.writer', '{}');
      // Sidecars may not publish control messages, to their own or any subject.
      shared.publish('pgwarden.control.policy.agents.writer', '{"forged":true}');
      nc.publish('pgwarden.control.policy.team-a.writer', '{"forged":true}');
      await Promise.all([shared.flush(), nc.flush()]);
      // Another namespace's policy: the server refuses the subscription.
      nc.subscribe('pgwarden.control.policy.agents.writer');
      await nc.flush();
      await new Promise((r) => setTimeout(r, 200));
      expect(heard.sort()).toEqual([session, 'pgwarden.control.policy.team-a.writer'].sort());
      expect(errors.join('\n')).toMatch(
        /Permissions Violation for Publish to "pgwarden\.control\.policy\.agents\.writer"/,
      );
      expect(errors.join('\n')).toMatch(
        /Permissions Violation for Publish to "pgwarden\.control\.policy\.team-a\.writer"/,
      );
      expect(errors.join('\n')).toMatch(
        /Permissions Violation for Subscription to "pgwarden\.control\.policy\.agents\.writer"/,
      );
      // Presence (rateLimit.scope: policy): a namespace's pods count each other, and only under their namespace.
      const presence = nc.subscribe('pgwarden.presence.team-a.writer', { max: 1 });
      await nc.flush();
      nc.publish('pgwarden.presence.team-a.writer', '{"instance":"p1"}');
      for await (const m of presence) expect(m.string()).toBe('{"instance":"p1"}');
      nc.publish('pgwarden.presence.agents.writer', '{"instance":"p1"}');
      await nc.flush();
      await new Promise((r) => setTimeout(r, 100));
      expect(errors.join('\n')).toMatch(/Permissions Violation for Publish to "pgwarden\.presence\.agents\.writer"/);
      // Read-back after a reconnect: its own policies and sessions, not another namespace's.
      const jsm = await jetstreamManager(nc, { checkAPI: false });
      expect((await jsm.direct.getMessage(CONTROL_STREAM, { last_by_subj: session }))?.subject).toBe(session);
      expect(
        (
          await jsm.direct.getMessage(CONTROL_STREAM, { last_by_subj: 'pgwarden.control.policy.team-a.writer' })
        )?.string(),
      ).toBe('{}');
      await expect(
        jsm.direct.getMessage(CONTROL_STREAM, { last_by_subj: 'pgwarden.control.policy.agents.writer' }),
      ).rejects.toThrow();
      // The shared user serves every namespace not listed: it reads back any policy's state.
      const sjsm = await jetstreamManager(shared, { checkAPI: false });
      expect(
        (
          await sjsm.direct.getMessage(CONTROL_STREAM, { last_by_subj: 'pgwarden.control.policy.agents.writer' })
        )?.string(),
      ).toBe('{}');
      await Promise.all([nc.close(), shared.close(), admin.close()]);
    } finally {
      await server.stop();
    }
  });
});
