import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  freePort,
  makeCertificates,
  natsServerBinary,
  type TestCertificates,
  waitForPort,
} from '../../../test/harness/index.js';
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
