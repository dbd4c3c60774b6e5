/**
 * The bundled NATS with nats.tls.secret, as `helm template` renders it, run by a real nats-server: it requires TLS of
 * every client, the sidecar (flags as the operator injects them with audit.natsCa) publishes over TLS verified by
 * name, and `pgwarden collector` with the chart's NODE_EXTRA_CA_CERTS consumes and stores the events.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase } from '../../collector/src/testing/test-database.js';
import { renderChart } from '../../operator/src/testing/helm-chart.js';
import { auditFromFlags } from '../../sidecar/src/audit/audit-flags.js';
import type { NatsAuditSink } from '../../sidecar/src/audit/nats-sink.js';
import { sessionInfo } from '../../sidecar/src/audit/nats-test-kit.js';
import { BUILT, type Proc, startCli } from '../audit-faults/processes.js';
import { makeCertificates, startNats, type TestCertificates, type TestNats } from '../harness/index.js';
import { ROLES } from '../harness/postgres.js';

const USERS = {
  SIDECAR_USER: 'sidecar',
  SIDECAR_PASSWORD: 'sidecar-pw-tls-5d1e',
  COLLECTOR_USER: 'collector',
  COLLECTOR_PASSWORD: 'collector-pw-tls-0a7c',
};
/** The host sidecars and the collector dial: the bundled NATS's Service, which the certificate must name. */
const SERVICE_HOST = 'pgw-pgwarden-nats.pgwarden.svc';

let objects: any[];
let nats: TestNats;
let certs: TestCertificates;
const dir = mkdtempSync(join(tmpdir(), 'pgwarden-nats-tls-chart-'));
const procs: Proc[] = [];

const natsContainer = () =>
  objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-nats').spec.template.spec;

function userDir(name: string, user: string, pass: string): string {
  const d = join(dir, name);
  mkdirSync(d);
  writeFileSync(join(d, 'username'), `${user}\n`);
  writeFileSync(join(d, 'password'), `${pass}\n`);
  return d;
}

beforeAll(async () => {
  objects = await renderChart({ nats: { tls: { secret: 'nats-tls' } }, audit: { natsCa: { secret: 'nats-ca' } } });
  const config = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'pgw-pgwarden-nats-config').data[
    'nats.conf'
  ];
  // The rendered pod tells NATS where its certificate is; here the same variables point at test files.
  const env = Object.fromEntries(
    natsContainer()
      .containers[0].env.filter((e: any) => e.value !== undefined)
      .map((e: any) => [e.name, e.value]),
  );
  expect(Object.keys(env)).toEqual(['NATS_TLS_CERT_FILE', 'NATS_TLS_KEY_FILE']);
  certs = makeCertificates(join(dir, 'certs'), [SERVICE_HOST, 'localhost']);
  nats = await startNats({
    config,
    env: { ...USERS, NATS_TLS_CERT_FILE: certs.certFile, NATS_TLS_KEY_FILE: certs.keyFile },
  });
}, 120_000);
afterAll(async () => {
  for (const p of procs) await p.kill();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('bundled NATS with nats.tls.secret', () => {
  it('mounts the Secret’s certificate and key where the environment says, readable by NATS alone', () => {
    const spec = natsContainer();
    const c = spec.containers[0];
    expect(c.volumeMounts).toContainEqual({ name: 'tls', mountPath: '/etc/nats-tls', readOnly: true });
    expect(c.env).toContainEqual({ name: 'NATS_TLS_CERT_FILE', value: '/etc/nats-tls/tls.crt' });
    expect(c.env).toContainEqual({ name: 'NATS_TLS_KEY_FILE', value: '/etc/nats-tls/tls.key' });
    expect(spec.volumes.find((v: any) => v.name === 'tls').secret).toEqual({
      secretName: 'nats-tls',
      // Kubernetes reads the chart's 0440 as octal (YAML 1.1); this parser (YAML 1.2) reads the digits as decimal.
      defaultMode: 440,
      items: [
        { key: 'tls.crt', path: 'tls.crt' },
        { key: 'tls.key', path: 'tls.key' },
      ],
    });
    // Sidecars dial the Service's name with the CA the operator copies (audit.natsCa), so TLS checks that name.
    const operator = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'pgw-pgwarden-operator');
    const args: string[] = operator.spec.template.spec.containers[0].args;
    expect(args).toContain(`--audit-url=nats://${SERVICE_HOST}:4222`);
    expect(args).toContain('--audit-nats-ca-source=nats-ca');
  });

  it('refuses a client that does not speak TLS, and a sidecar whose CA did not sign the certificate', async () => {
    // A plain-text client: the server says TLS is required, takes the CONNECT for a failed TLS handshake and hangs up.
    const answers = await new Promise<string>((resolve, reject) => {
      const s = tcpConnect(nats.port, '127.0.0.1');
      let text = '';
      s.on('data', (b) => {
        text += b.toString();
        if (text.startsWith('INFO ') && text.includes('\r\n') && !text.includes('CONNECT_SENT')) {
          s.write(
            `CONNECT ${JSON.stringify({ user: USERS.SIDECAR_USER, pass: 'not-sent-in-clear', verbose: true })}\r\nPING\r\n`,
          );
          text += 'CONNECT_SENT';
        }
      });
      s.on('close', () => resolve(text));
      s.on('error', () => resolve(text));
      setTimeout(() => reject(new Error(`no answer: ${text}`)), 5000);
    });
    expect(JSON.parse(answers.slice('INFO '.length, answers.indexOf('\r\n')))).toMatchObject({ tls_required: true });
    expect(answers.endsWith('CONNECT_SENT')).toBe(true); // nothing after the CONNECT: no +OK, no PONG

    const wrong = auditFromFlags(
      {
        audit: `nats://localhost:${nats.port}`,
        spoolDir: join(dir, 'spool-wrong-ca'),
        auditNatsCredentialsDir: userDir('sidecar-wrong-ca', USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD),
        auditNatsCa: certs.otherCaFile,
      },
      { checkpointIntervalMs: 600_000 },
    );
    wrong.recorder.openSession(sessionInfo('tls-wrong-ca')).end({});
    await new Promise((r) => setTimeout(r, 1500));
    expect((wrong.sink as NatsAuditSink).stats()).toMatchObject({ connected: false, published: 0 });
    await wrong.sink.close(100);
  });

  it.skipIf(!BUILT && !process.env.CI)(
    'carries the sidecar’s events over TLS to `pgwarden collector`, which trusts the CA as the chart configures it',
    async () => {
      const store = await createTestDatabase(inject('pg'), ROLES.superuser);
      try {
        const collectorSpec = objects.find(
          (o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector',
        ).spec.template.spec;
        const caEnv = collectorSpec.containers[0].env.find((e: any) => e.name === 'NODE_EXTRA_CA_CERTS');
        expect(caEnv.value).toBe('/etc/pgwarden/nats-ca/ca.crt');
        const collector = await startCli(
          [
            'collector',
            '--nats',
            `nats://localhost:${nats.port}`,
            '--nats-credentials-dir',
            userDir('collector', USERS.COLLECTOR_USER, USERS.COLLECTOR_PASSWORD),
            '--listen',
            '127.0.0.1:0',
          ],
          /collector listening on (http:\S+)/,
          { PGWARDEN_COLLECTOR_STORE: store.url, NODE_EXTRA_CA_CERTS: certs.caFile },
        );
        procs.push(collector);
        const audit = auditFromFlags(
          {
            audit: `nats://localhost:${nats.port}`,
            spoolDir: join(dir, 'spool-ok'),
            auditNatsCredentialsDir: userDir('sidecar', USERS.SIDECAR_USER, USERS.SIDECAR_PASSWORD),
            auditNatsCa: certs.caFile,
          },
          { checkpointIntervalMs: 600_000 },
        );
        audit.recorder.openSession(sessionInfo('tls-e2e')).end({});
        const sink = audit.sink as NatsAuditSink;
        await sink.whenIdle(10_000);
        expect(sink.stats()).toMatchObject({ connected: true, dropped: 0 });
        const db = new pg.Client({ connectionString: store.url });
        await db.connect();
        try {
          await expect
            .poll(
              async () =>
                (await db.query("SELECT type FROM audit_events WHERE session_id = 'tls-e2e' ORDER BY seq")).rows.map(
                  (r) => r.type,
                ),
              { timeout: 15_000 },
            )
            .toEqual(['session.start', 'session.end']);
        } finally {
          await db.end();
        }
        await sink.close();
        await collector.stop();
        expect(collector.output()).not.toContain(USERS.COLLECTOR_PASSWORD);
      } finally {
        await store.drop();
      }
    },
  );
});
