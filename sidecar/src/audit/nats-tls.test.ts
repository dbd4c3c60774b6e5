import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { APPROVALS_STREAM } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  freePort,
  makeCertificates,
  natsServerBinary,
  startNats,
  type TestCertificates,
  type TestNats,
  waitForPort,
} from '../../../test/harness/index.js';
import { approvalGateForSink } from '../governance/nats-approval-gate.js';
import { auditFromFlags } from './audit-flags.js';
import { createAuditRecorder } from './audit-recorder.js';
import { createAuditSink } from './create-audit-sink.js';
import type { NatsAuditSink } from './nats-sink.js';
import { sessionInfo } from './nats-test-kit.js';

/** A nats-server that requires TLS (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/tls). */
let dir: string;
let certs: TestCertificates;
let child: ChildProcess;
let port: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgwarden-nats-tls-'));
  certs = makeCertificates(dir);
  port = await freePort();
  child = spawn(
    natsServerBinary(),
    [
      '-js',
      '-sd',
      join(dir, 'js'),
      '-a',
      '127.0.0.1',
      '-p',
      String(port),
      '--tls',
      '--tlscert',
      certs.certFile,
      '--tlskey',
      certs.keyFile,
    ],
    { stdio: 'ignore' },
  );
  await waitForPort(port);
});

afterAll(() => {
  child?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('NATS sink over TLS', () => {
  it('delivers when the server certificate verifies against --audit-nats-ca', async () => {
    const sink = createAuditSink(`nats://127.0.0.1:${port}`, {
      natsCaFile: certs.caFile,
      spoolDir: join(dir, 'spool-ok'),
      registry: new Registry(),
    }) as NatsAuditSink;
    // No heads tick while it connects: the test counts the two events it sent.
    createAuditRecorder(sink, { checkpointIntervalMs: 600_000 }).openSession(sessionInfo('tls-ok')).end({});
    await sink.whenIdle(10_000);
    expect(sink.stats()).toMatchObject({ connected: true, published: 2, dropped: 0 });
    await sink.close();
  });

  it('refuses a server whose certificate another CA signed: nothing is published, events stay in the spool', async () => {
    const sink = createAuditSink(`nats://127.0.0.1:${port}`, {
      natsCaFile: certs.otherCaFile,
      spoolDir: join(dir, 'spool-bad'),
      registry: new Registry(),
    }) as NatsAuditSink;
    createAuditRecorder(sink, { checkpointIntervalMs: 100 }).openSession(sessionInfo('tls-bad')).end({});
    await new Promise((r) => setTimeout(r, 1500));
    // session.start, session.end, and the sidecar chain's audit.heads naming the session.
    expect(sink.stats()).toMatchObject({ connected: false, published: 0, spooled: 3, mode: 'spool' });
    await sink.close(100);
  });
});

/**
 * The sidecar as the operator injects it with audit.natsCa: `--audit nats://…`, `--audit-nats-credentials-dir` and
 * `--audit-nats-ca` (operator webhook/sidecar-container.ts). Approvals, live control and presence ride the audit
 * sink's connection, so they get the same TLS.
 */
describe('sidecar flags with --audit-nats-ca', () => {
  const user = { user: 'sidecar', password: 'pw-only-the-sidecar-holds' };
  const authorization = `authorization { users = [ { user: ${user.user}, password: "${user.password}" } ] }`;
  let credentialsDir: string;
  let tlsNats: TestNats;
  let impostor: TestNats;

  beforeAll(async () => {
    credentialsDir = join(dir, 'audit-credentials');
    mkdirSync(credentialsDir);
    writeFileSync(join(credentialsDir, 'username'), user.user);
    writeFileSync(join(credentialsDir, 'password'), user.password);
    tlsNats = await startNats({
      config: `tls { cert_file: "${certs.certFile}", key_file: "${certs.keyFile}" }\n${authorization}\n`,
    });
    // What a rewritten /etc/hosts could send the sidecar to: a NATS without TLS that would take the same user.
    impostor = await startNats({ config: `${authorization}\n` });
  }, 60_000);
  afterAll(async () => {
    await tlsNats?.stop();
    await impostor?.stop();
  });

  const flags = (port: number, spool: string, ca: string | undefined) =>
    auditFromFlags(
      {
        // The name the certificate carries, not the address: TLS verifies the server's name against it.
        audit: `nats://localhost:${port}`,
        spoolDir: join(dir, spool),
        auditNatsCredentialsDir: credentialsDir,
        ...(ca ? { auditNatsCa: ca } : {}),
      },
      { checkpointIntervalMs: 600_000 },
    );

  it('publishes audit events and approval requests over TLS, the server verified by name against the CA', async () => {
    const admin = await connect({
      servers: `nats://localhost:${tlsNats.port}`,
      user: user.user,
      pass: user.password,
      tls: { caFile: certs.caFile },
    });
    await (await jetstreamManager(admin)).streams.add({ name: APPROVALS_STREAM, subjects: ['pgwarden.approval.>'] });
    const audit = flags(tlsNats.port, 'spool-flags-ok', certs.caFile);
    const sink = audit.sink as NatsAuditSink;
    audit.recorder.openSession(sessionInfo('tls-flags')).end({});
    await sink.whenIdle(10_000);
    expect(sink.stats()).toMatchObject({ connected: true, published: 2, dropped: 0 });

    const gate = approvalGateForSink(sink);
    const ended = new AbortController();
    const outcome = gate!.request({
      id: randomUUID(),
      sessionId: 'tls-flags',
      policy: { name: 'writer', hash: 'sha256:abc', namespace: 'agents' },
      approvers: { users: ['alice'] },
      rule: 'review',
      sql: 'DELETE FROM orders WHERE id = 7',
      identity: { namespace: 'agents' },
      timeoutMs: 10_000,
      signal: ended.signal,
    });
    const jsm = await jetstreamManager(admin);
    await expect.poll(async () => (await jsm.streams.info(APPROVALS_STREAM)).state.messages).toBe(1);
    ended.abort();
    // Not `unavailable`: the queue took the request, over the TLS connection.
    expect(await outcome).toEqual({ decision: 'timeout' });
    await sink.close();
    await admin.close();
  });

  it('refuses a NATS without TLS at the configured address: the password is never sent', async () => {
    const guarded = flags(impostor.port, 'spool-impostor-ca', certs.caFile);
    guarded.recorder.openSession(sessionInfo('impostor-ca')).end({});
    await new Promise((r) => setTimeout(r, 1500));
    expect((guarded.sink as NatsAuditSink).stats()).toMatchObject({ connected: false, published: 0 });
    await guarded.sink.close(100);

    // The same sidecar without the CA logs in to the impostor: what the CA prevents.
    const open = flags(impostor.port, 'spool-impostor-open', undefined);
    open.recorder.openSession(sessionInfo('impostor-open')).end({});
    await (open.sink as NatsAuditSink).whenIdle(10_000);
    expect((open.sink as NatsAuditSink).stats()).toMatchObject({ connected: true, published: 2 });
    await open.sink.close();
  });
});
