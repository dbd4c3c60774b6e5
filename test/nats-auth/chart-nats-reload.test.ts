/**
 * The bundled NATS picks up a renewed certificate without a restart: the chart's `pgwarden nats-reloader` container
 * (run here as the real CLI, with the rendered args) watches the Secret's files as the kubelet lays them out
 * (`..data` symlink swapped atomically) and sends SIGHUP to the PID the rendered `-P` makes a real nats-server write.
 */
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderChart, validateKubernetesObject } from '../../operator/src/testing/helm-chart.js';
import { BUILT, type Proc, startCli } from '../audit-faults/processes.js';
import { makeCertificates, startNats, type TestCertificates, type TestNats } from '../harness/index.js';

const USERS = {
  SIDECAR_USER: 'sidecar',
  SIDECAR_PASSWORD: 'sidecar-pw-reload-7b2c',
  COLLECTOR_USER: 'collector',
  COLLECTOR_PASSWORD: 'collector-pw-reload-3e9f',
};
const SERVICE_HOST = 'pgw-pgwarden-nats.pgwarden.svc';
const WITH_TLS = { nats: { tls: { secret: 'nats-tls' } }, audit: { natsCa: { secret: 'nats-ca' } } };

const natsPod = (objects: any[]) =>
  objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-nats').spec.template.spec;

const dir = mkdtempSync(join(tmpdir(), 'pgwarden-nats-reload-'));
/** The Secret volume, laid out as the kubelet's atomic writer does: files are symlinks through `..data`. */
const secretDir = join(dir, 'nats-tls');
const pidFile = join(dir, 'run', 'nats.pid');
let generation = 0;

/** Writes a new generation of the Secret and swaps `..data` to it in one rename, as the kubelet does. */
function publishSecret(cert: string, key: string): void {
  const gen = `..2026_12_02_00_00_0${generation++}`;
  mkdirSync(join(secretDir, gen), { recursive: true });
  writeFileSync(join(secretDir, gen, 'tls.crt'), cert);
  writeFileSync(join(secretDir, gen, 'tls.key'), key);
  symlinkSync(gen, join(secretDir, '..data_tmp'));
  renameSync(join(secretDir, '..data_tmp'), join(secretDir, '..data'));
}

const pem = (c: TestCertificates) => ({ cert: readFileSync(c.certFile, 'utf8'), key: readFileSync(c.keyFile, 'utf8') });
const fingerprint = (c: TestCertificates) => new X509Certificate(readFileSync(c.certFile)).fingerprint256;

/** The certificate nats-server presents to a new client now (NATS sends INFO in clear, then the TLS handshake). */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('error', reject);
    let info = '';
    const onData = (b: Buffer) => {
      info += b.toString();
      if (!info.includes('\r\n')) return;
      socket.off('data', onData);
      const tls = tlsConnect({ socket, servername: SERVICE_HOST, rejectUnauthorized: false }, () => {
        const fp = tls.getPeerX509Certificate()?.fingerprint256 ?? '';
        tls.destroy();
        resolve(fp);
      });
      tls.once('error', reject);
    };
    socket.on('data', onData);
  });
}

let nats: TestNats;
let first: TestCertificates;
let reloader: Proc | undefined;
let client: NatsConnection | undefined;

beforeAll(async () => {
  first = makeCertificates(join(dir, 'first'), [SERVICE_HOST, 'localhost']);
  mkdirSync(join(dir, 'run'));
  publishSecret(pem(first).cert, pem(first).key);
  symlinkSync('..data/tls.crt', join(secretDir, 'tls.crt'));
  symlinkSync('..data/tls.key', join(secretDir, 'tls.key'));
}, 60_000);
afterAll(async () => {
  await client?.close().catch(() => {});
  await reloader?.kill();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('bundled NATS certificate reload', () => {
  it('renders the reloader next to NATS with TLS, sharing its PID namespace, and nothing of it without TLS', async () => {
    const objects = await renderChart(WITH_TLS);
    const statefulSet = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-nats');
    expect(await validateKubernetesObject(statefulSet)).toBe(true);
    const pod = natsPod(objects);
    expect(pod.shareProcessNamespace).toBe(true);
    const [natsC, reloaderC] = pod.containers;
    expect(natsC.args.slice(-2)).toEqual(['-P', '/var/run/nats/nats.pid']);
    expect(reloaderC.name).toBe('reloader');
    expect(reloaderC.args).toEqual([
      'nats-reloader',
      '--watch',
      '/etc/nats-tls',
      '--pid-file',
      '/var/run/nats/nats.pid',
      '--interval',
      '10s',
    ]);
    // Same user as NATS (a signal needs it), nothing more than the other containers get.
    expect(reloaderC.securityContext).toMatchObject({
      runAsUser: natsC.securityContext.runAsUser,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(reloaderC.volumeMounts).toEqual([
      { name: 'tls', mountPath: '/etc/nats-tls', readOnly: true },
      { name: 'pid', mountPath: '/var/run/nats', readOnly: true },
    ]);
    expect(natsC.volumeMounts).toContainEqual({ name: 'pid', mountPath: '/var/run/nats' });
    expect(pod.volumes.find((v: any) => v.name === 'pid').emptyDir).toMatchObject({ medium: 'Memory' });

    const plain = natsPod(await renderChart());
    expect(plain.shareProcessNamespace).toBeUndefined();
    expect(plain.containers.map((c: any) => c.name)).toEqual(['nats']);
    expect(plain.containers[0].args).not.toContain('-P');
  }, 60_000);

  it.skipIf(!BUILT && !process.env.CI)(
    'a renewed certificate swapped into the Secret is served to new clients; connected clients stay; a key that does not match waits',
    async () => {
      const objects = await renderChart(WITH_TLS);
      const config = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'pgw-pgwarden-nats-config').data[
        'nats.conf'
      ];
      const pod = natsPod(objects);
      // The rendered paths, moved into the test's directory.
      const local = (a: string) =>
        a === '/var/run/nats/nats.pid' ? pidFile : a === '/etc/nats-tls' ? secretDir : a === '10s' ? '200ms' : a;
      const natsArgs: string[] = pod.containers[0].args;
      nats = await startNats({
        config,
        env: {
          ...USERS,
          NATS_TLS_CERT_FILE: join(secretDir, 'tls.crt'),
          NATS_TLS_KEY_FILE: join(secretDir, 'tls.key'),
        },
        args: natsArgs.slice(natsArgs.indexOf('-P')).map(local),
      });
      expect(await servedFingerprint(nats.port)).toBe(fingerprint(first));
      reloader = await startCli(pod.containers[1].args.map(local), /nats-reloader watching/);

      client = await connect({
        servers: `tls://localhost:${nats.port}`,
        user: USERS.COLLECTOR_USER,
        pass: USERS.COLLECTOR_PASSWORD,
        tls: { ca: readFileSync(first.caFile, 'utf8') },
        reconnect: false,
      });

      const second = makeCertificates(join(dir, 'second'), [SERVICE_HOST, 'localhost']);
      publishSecret(pem(second).cert, pem(second).key);
      await expect.poll(() => servedFingerprint(nats.port), { timeout: 15_000 }).toBe(fingerprint(second));
      // A reload keeps the connections it has: the client verified the old certificate and goes on.
      await client.flush();
      expect(client.isClosed()).toBe(false);
      expect(reloader.output()).toMatch(/nats-server reloading/);

      // A writer that is not the kubelet's atomic swap, caught half-way: the new certificate with the old key.
      const third = makeCertificates(join(dir, 'third'), [SERVICE_HOST, 'localhost']);
      publishSecret(pem(third).cert, pem(second).key);
      await expect.poll(() => reloader!.output(), { timeout: 15_000 }).toMatch(/does not match/);
      expect(reloader.output().match(/nats-server reloading/g)).toHaveLength(1);
      publishSecret(pem(third).cert, pem(third).key);
      await expect.poll(() => servedFingerprint(nats.port), { timeout: 15_000 }).toBe(fingerprint(third));
      expect(reloader.output().match(/nats-server reloading/g)).toHaveLength(2);
      expect(reloader.output()).not.toContain('PRIVATE KEY');
    },
    90_000,
  );
});
