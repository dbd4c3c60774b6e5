import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort, makeCertificates } from '../../../test/harness/index.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import type { AuditEvent } from '../event.js';
import { CollectorMetrics } from '../metrics.js';
import { AuditStore } from '../store/audit-store.js';
import { getCursor } from '../store/queries.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { elasticsearchExporter } from './elasticsearch-bulk.js';
import { type Exporter, ExportRunner } from './export-runner.js';
import { jsonlFileExporter } from './jsonl-file.js';
import { splunkHecExporter } from './splunk-hec.js';
import { syslogExporter } from './syslog-exporter.js';
import { parseOctetCounting } from './syslog-format.js';

const waitFor = async (check: () => boolean | Promise<boolean>, ms = 15_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
};

const listen = (s: Server | TcpServer, port = 0) =>
  new Promise<number>((r) => s.listen(port, '127.0.0.1', () => r((s.address() as { port: number }).port)));

describe('exports deliver every stored event to real receivers, retrying failures', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: AuditStore;
  let events: AuditEvent[];
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-exports-'));
  const metrics = new CollectorMetrics();

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
    events = [
      ...makeSession({ id: 'exp-a', statements: 12, denyEvery: 4, user: 'alice' }),
      ...makeSession({ id: 'exp-b', statements: 9 }),
    ];
    await store.ingest(events);
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function runToEnd(exporter: Exporter): Promise<void> {
    const runner = new ExportRunner(store, exporter, metrics, { batchSize: 10, idleMs: 50, maxBackoffMs: 200 });
    runner.start();
    const last = (await store.db.query<{ p: string }>('SELECT max(ingest_seq)::text AS p FROM audit_events'))[0].p;
    await waitFor(async () => (await getCursor(store.db, `export:${exporter.name}`)) === Number(last));
    await runner.stop();
  }

  it('JSON lines: rotates by size, gzips rotated files, and nothing is lost or repeated', async () => {
    const path = join(dir, 'jsonl', 'audit.jsonl');
    await runToEnd(jsonlFileExporter({ name: 'files', path, maxBytes: 6000, gzip: true }));
    const files = readdirSync(join(dir, 'jsonl')).sort();
    const rotated = files.filter((f) => f.endsWith('.jsonl.gz'));
    expect(rotated.length).toBeGreaterThan(1);
    const text = [
      ...rotated.map((f) => gunzipSync(readFileSync(join(dir, 'jsonl', f))).toString('utf8')),
      files.includes('audit.jsonl') ? readFileSync(path, 'utf8') : '',
    ].join('');
    const ids = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).id);
    expect(ids).toEqual(events.map((e) => e.id));
  });

  it('OCSF JSON: Datastore Activity records with activity, disposition, actor and query', async () => {
    const path = join(dir, 'ocsf.jsonl');
    await runToEnd(jsonlFileExporter({ name: 'ocsf', path, format: 'ocsf' }));
    const recs = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(recs).toHaveLength(events.length);
    const denied = recs.find((r) => r.metadata.uid === 'exp-a.5');
    expect(denied).toMatchObject({
      class_uid: 6005,
      category_uid: 6,
      activity_id: 7,
      type_uid: 600507,
      disposition_id: 2,
      status_id: 2,
      actor: { user: { name: 'alice' }, session: { uid: 'exp-a' } },
      query_info: { query_string: 'DELETE FROM public.orders' },
      database: { name: 'orders', type: 'PostgreSQL' },
    });
    expect(recs[0]).toMatchObject({ activity_id: 3, activity_name: 'Connect' });
  });

  it('Splunk HEC: checks the token, survives a 503, receives every event', async () => {
    const received: any[] = [];
    let calls = 0;
    const server = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        calls++;
        if (req.url !== '/services/collector/event' || req.headers.authorization !== 'Splunk hec-token-123') {
          res.writeHead(403).end('{"text":"Invalid token","code":4}');
          return;
        }
        if (calls === 1) {
          res.writeHead(503).end('{"text":"Server is busy","code":9}');
          return;
        }
        // HEC batches are concatenated JSON objects; ours are newline-separated.
        for (const line of body.split('\n')) received.push(JSON.parse(line));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"text":"Success","code":0}');
      });
    });
    const port = await listen(server);
    try {
      const wrong = splunkHecExporter({ name: 'hec-wrong', url: `http://127.0.0.1:${port}`, token: 'nope' });
      await expect(wrong.deliver(events.slice(0, 1))).rejects.toThrow(/403.*Invalid token/);
      await runToEnd(
        splunkHecExporter({ name: 'hec', url: `http://127.0.0.1:${port}`, token: 'hec-token-123', index: 'audit' }),
      );
      expect(received.map((r) => r.event.id)).toEqual(events.map((e) => e.id));
      expect(received[1]).toMatchObject({
        sourcetype: 'pgwarden:audit',
        source: 'pgwarden',
        index: 'audit',
        time: Date.parse(events[1].time) / 1000,
      });
    } finally {
      server.close();
    }
  });

  it('Elasticsearch _bulk: NDJSON with ECS fields, ids for idempotency, failed items retried', async () => {
    const docs = new Map<string, any>();
    let first = true;
    let retriedIds: string[] = [];
    const server = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        expect(req.headers['content-type']).toBe('application/x-ndjson');
        expect(body.endsWith('\n')).toBe(true);
        const lines = body
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l));
        const items = [];
        for (let i = 0; i < lines.length; i += 2) {
          const { _id, _index } = lines[i].index;
          if (first && i === 2) {
            items.push({
              index: {
                _id,
                _index,
                status: 429,
                error: { type: 'es_rejected_execution_exception', reason: 'queue full' },
              },
            });
            retriedIds = [_id];
            continue;
          }
          if (!first && retriedIds.includes(_id)) retriedIds.push('resent');
          docs.set(_id, lines[i + 1]);
          items.push({ index: { _id, _index, status: 201, result: 'created' } });
        }
        const errors = first;
        first = false;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ took: 1, errors, items }));
      });
    });
    const port = await listen(server);
    try {
      await runToEnd(elasticsearchExporter({ name: 'es', url: `http://127.0.0.1:${port}`, index: 'pgwarden-audit' }));
      expect(retriedIds).toEqual([events[1].id, 'resent']);
      expect([...docs.keys()].sort()).toEqual(events.map((e) => e.id).sort());
      expect(docs.get('exp-a.5')).toMatchObject({
        '@timestamp': events[4].time,
        event: { action: 'statement-delete', outcome: 'failure', id: 'exp-a.5', category: ['database'] },
        user: { name: 'alice' },
        db: { system: 'postgresql', name: 'orders', statement: 'DELETE FROM public.orders', operation: 'delete' },
        labels: { session_id: 'exp-a', decision: 'deny', policy: 'analytics-agent' },
        rule: { name: 'writes-need-approval' },
      });
    } finally {
      server.close();
    }
  });

  function syslogCollector(received: string[]) {
    return (socket: import('node:net').Socket) => {
      let buf = Buffer.alloc(0);
      socket.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        const { messages, rest } = parseOctetCounting(buf);
        received.push(...messages);
        buf = rest;
      });
      socket.on('error', () => {});
    };
  }

  const RFC5424 = /^<(\d+)>1 (\S+) (\S+) pgwarden - (\S+) \[pgwarden@32473 ([^\]]*)\] (\{.*\})$/s;

  it('syslog over TCP: RFC 5424 messages in octet-counting frames, delivered once the receiver comes up', async () => {
    const received: string[] = [];
    const port = await freePort();
    const server = createTcpServer(syslogCollector(received));
    const runner = new ExportRunner(store, syslogExporter({ name: 'syslog-tcp', host: '127.0.0.1', port }), metrics, {
      batchSize: 10,
      idleMs: 50,
      maxBackoffMs: 200,
    });
    const failuresBefore =
      (await metrics.exportFailures.get()).values.find((v) => v.labels.exporter === 'syslog-tcp')?.value ?? 0;
    runner.start();
    // Nothing listens yet: deliveries fail (connection refused) and are retried.
    await waitFor(
      async () =>
        ((await metrics.exportFailures.get()).values.find((v) => v.labels.exporter === 'syslog-tcp')?.value ?? 0) >
        failuresBefore + 1,
    );
    await listen(server, port);
    await waitFor(() => received.length >= events.length);
    await runner.stop();
    server.close();
    expect(received.map((m) => JSON.parse(RFC5424.exec(m)![6]).id)).toEqual(events.map((e) => e.id));
    const denied = RFC5424.exec(received[4])!;
    expect(Number(denied[1])).toBe(13 * 8 + 4); // facility log audit, severity warning
    expect(denied[2]).toBe(events[4].time);
    expect(denied[4]).toBe('statement');
    expect(denied[5]).toBe(
      'session="exp-a" seq="5" type="statement" decision="deny" rule="writes-need-approval" identity="alice" namespace="agents" policy="analytics-agent"',
    );
    // A statement with a newline stays one frame.
    expect(received.every((m) => RFC5424.test(m))).toBe(true);
  });

  it('syslog: a receiver that stops reading fails the delivery after timeoutMs instead of stalling the exporter', async () => {
    const sockets: import('node:net').Socket[] = [];
    // Accepts, then never reads: the kernel's buffers fill and a write never completes.
    const server = createTcpServer((s) => {
      s.pause();
      s.on('error', () => {});
      sockets.push(s);
    });
    const port = await listen(server);
    const exporter = syslogExporter({ name: 'syslog-stuck', host: '127.0.0.1', port, timeoutMs: 500 });
    const big = { ...events[1], statement: { ...events[1].statement!, text: 'x'.repeat(1 << 20) } } as AuditEvent;
    const started = Date.now();
    try {
      await expect(
        (async () => {
          for (let i = 0; i < 64; i++) await exporter.deliver([big]);
        })(),
      ).rejects.toThrow(/timed out/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await Promise.race([exporter.close(), new Promise((r) => setTimeout(r, 100))]);
      for (const s of sockets) s.destroy();
      server.close();
    }
  });

  it('syslog over TLS: verifies the receiver certificate against the configured CA', async () => {
    const certs = makeCertificates(join(dir, 'tls'));
    const received: string[] = [];
    const server = createTlsServer(
      { cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) },
      syslogCollector(received),
    );
    const port = await listen(server);
    try {
      const untrusted = syslogExporter({
        name: 'syslog-untrusted',
        host: '127.0.0.1',
        port,
        tls: { ca: readFileSync(certs.otherCaFile, 'utf8') },
      });
      await expect(untrusted.deliver(events.slice(0, 1))).rejects.toThrow(/certificate/);
      await runToEnd(
        syslogExporter({
          name: 'syslog-tls',
          host: '127.0.0.1',
          port,
          tls: { ca: certs.ca, servername: 'localhost' },
          format: 'ocsf',
        }),
      );
      // Delivered means accepted by the kernel; the receiver may still be decrypting the last records.
      await waitFor(() => received.length >= events.length);
      expect(received).toHaveLength(events.length);
      const body = JSON.parse(RFC5424.exec(received[0])![6]);
      expect(body).toMatchObject({ class_uid: 6005, metadata: { uid: 'exp-a.1' } });
    } finally {
      server.close();
    }
  });

  /** A gauge's value for one exporter as Prometheus would scrape it now. */
  async function scraped(metric: string, exporter: string): Promise<number> {
    const text = await metrics.registry.metrics();
    const m = new RegExp(`^${metric}\\{exporter="${exporter}"\\} (\\S+)$`, 'm').exec(text);
    if (!m) throw new Error(`${metric}{exporter="${exporter}"} not scraped`);
    return Number(m[1]);
  }

  // Last: it stores more events, which the tests above count.
  it('export lag keeps growing while a receiver refuses every delivery, and drops to 0 once it accepts', async () => {
    let refuse = true;
    const server = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () =>
        refuse
          ? res.writeHead(503).end('{"text":"Server is busy","code":9}')
          : res.writeHead(200).end('{"text":"Success","code":0}'),
      );
    });
    const hecPort = await listen(server);
    // Nothing listens on this port: every syslog delivery is refused at connect.
    const syslogPort = await freePort();
    const runners = [
      new ExportRunner(
        store,
        splunkHecExporter({ name: 'hec-refusing', url: `http://127.0.0.1:${hecPort}`, token: 't' }),
        metrics,
        { batchSize: 10, idleMs: 50, maxBackoffMs: 200 },
      ),
      new ExportRunner(
        store,
        syslogExporter({ name: 'syslog-refusing', host: '127.0.0.1', port: syslogPort }),
        metrics,
        { batchSize: 10, idleMs: 50, maxBackoffMs: 200 },
      ),
    ];
    const failures = async (name: string) =>
      (await metrics.exportFailures.get()).values.find((v) => v.labels.exporter === name)?.value ?? 0;
    try {
      for (const r of runners) r.start();
      await waitFor(async () => (await failures('hec-refusing')) > 2 && (await failures('syslog-refusing')) > 2);
      const first = {
        hec: await scraped('pgwarden_collector_export_lag_seconds', 'hec-refusing'),
        syslog: await scraped('pgwarden_collector_export_lag_seconds', 'syslog-refusing'),
      };
      expect(first.hec).toBeGreaterThan(0);
      expect(await scraped('pgwarden_collector_export_lag_events', 'hec-refusing')).toBe(events.length);
      expect(await scraped('pgwarden_collector_export_lag_events', 'syslog-refusing')).toBe(events.length);
      await new Promise((r) => setTimeout(r, 1500));
      // Still refused, nothing delivered: the oldest waiting event is 1.5 s older, and the gauges say so.
      expect(await scraped('pgwarden_collector_export_lag_seconds', 'hec-refusing')).toBeGreaterThanOrEqual(
        first.hec + 1.4,
      );
      expect(await scraped('pgwarden_collector_export_lag_seconds', 'syslog-refusing')).toBeGreaterThanOrEqual(
        first.syslog + 1.4,
      );
      // More events stored meanwhile: the events gauge grows too, without a single success.
      const more = makeSession({ id: 'exp-lag', statements: 2 });
      await store.ingest(more);
      await waitFor(
        async () =>
          (await scraped('pgwarden_collector_export_lag_events', 'hec-refusing')) === events.length + more.length,
      );
      refuse = false;
      await waitFor(async () => (await scraped('pgwarden_collector_export_lag_seconds', 'hec-refusing')) === 0);
      expect(await scraped('pgwarden_collector_export_lag_events', 'hec-refusing')).toBe(0);
      expect(await scraped('pgwarden_collector_export_lag_seconds', 'syslog-refusing')).toBeGreaterThan(
        first.syslog + 1.4,
      );
    } finally {
      for (const r of runners) await r.stop();
      server.close();
    }
    // A stopped exporter is no longer reported.
    await expect(scraped('pgwarden_collector_export_lag_seconds', 'hec-refusing')).rejects.toThrow(/not scraped/);
  });
});
