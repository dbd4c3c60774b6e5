import { copyFileSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { makeCertificates, type TestCertificates } from '../../../test/harness/tls.js';
import { type Collector, startCollector } from '../collector.js';
import { createTestDatabase } from '../testing/test-database.js';

/** GET over HTTPS trusting `ca`: status and body. */
function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** The certificate the server presents (its serial number tells two certificates apart). */
function servedCertificate(port: number, ca: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      resolve(s.getPeerCertificate());
      s.end();
    });
    s.on('error', reject);
  });
}

describe('collector API over HTTPS (--tls-cert/--tls-key)', () => {
  let dir: string;
  let certs: TestCertificates;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  const live = { certFile: '', keyFile: '', reloadMs: 200 };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-collector-tls-'));
    certs = makeCertificates(join(dir, 'a'));
    live.certFile = join(dir, 'tls.crt');
    live.keyFile = join(dir, 'tls.key');
    copyFileSync(certs.certFile, live.certFile);
    copyFileSync(certs.keyFile, live.keyFile);
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0, tls: live },
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the API and the page over HTTPS, and nothing in plain HTTP', async () => {
    expect(collector.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await httpsGet(`${collector.url}/api/v1/sessions`, certs.ca)).toMatchObject({ status: 200 });
    expect((await httpsGet(`${collector.url}/`, certs.ca)).body).toContain('<title>pgwarden collector</title>');
    await expect(fetch(collector.url.replace('https:', 'http:') + '/healthz')).rejects.toThrow();
  });

  it('serves a renewed certificate without a restart', async () => {
    const port = Number(new URL(collector.url).port);
    const before = await servedCertificate(port, certs.ca);
    // A renewal by the same CA, swapped in the way a Secret update replaces files: written aside, then renamed.
    const renewed = makeCertificates(join(dir, 'b'));
    copyFileSync(renewed.certFile, `${live.certFile}.new`);
    copyFileSync(renewed.keyFile, `${live.keyFile}.new`);
    renameSync(`${live.keyFile}.new`, live.keyFile);
    renameSync(`${live.certFile}.new`, live.certFile);
    const until = Date.now() + 20_000;
    let now = before;
    while (now.serialNumber === before.serialNumber && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      now = await servedCertificate(port, renewed.ca).catch(() => before);
    }
    expect(now.serialNumber).not.toBe(before.serialNumber);
    expect(await httpsGet(`${collector.url}/healthz`, renewed.ca)).toMatchObject({ status: 200 });
  }, 30_000);

  it('refuses to start when a file cannot be read, naming it', async () => {
    await expect(
      startCollector({
        store: { url: db.url },
        http: { port: 0, tls: { certFile: join(dir, 'missing.crt'), keyFile: live.keyFile } },
        logger: pino({ level: 'silent' }),
      }),
    ).rejects.toThrow(/TLS certificate .*missing\.crt cannot be read: ENOENT/);
  });
});
