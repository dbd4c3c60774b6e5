/**
 * The Helm chart's bundled NATS configuration, run by a real nats-server: only the sidecars' user may publish audit
 * events, and it can do nothing else with the stream; the collector's user consumes; anonymous clients are refused.
 * The configuration text is what `helm template` renders, so the chart cannot drift from what is tested here.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { startNats, type TestNats } from '../harness/index.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../', import.meta.url));
const USERS = {
  SIDECAR_USER: 'sidecar',
  SIDECAR_PASSWORD: 'sidecar-pw-7f3a',
  COLLECTOR_USER: 'collector',
  COLLECTOR_PASSWORD: 'collector-pw-91bc',
};

let nats: TestNats;

async function chartNatsConfig(): Promise<string> {
  const { stdout: helm } = await run(`${repo}scripts/helm.sh`, [], { maxBuffer: 1 << 20 });
  const { stdout } = await run(helm.trim(), ['template', 'pgw', `${repo}charts/pgwarden`, '--namespace', 'pgwarden'], {
    maxBuffer: 16 << 20,
  });
  const cm = parseAllDocuments(stdout)
    .map((d: any) => d.toJS())
    .find((o: any) => o?.kind === 'ConfigMap' && o.metadata.name === 'pgw-pgwarden-nats-config');
  if (!cm) throw new Error('the chart renders no NATS ConfigMap');
  return cm.data['nats.conf'];
}

beforeAll(async () => {
  nats = await startNats({ config: await chartNatsConfig(), env: USERS });
}, 120_000);
afterAll(async () => {
  await nats?.stop();
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
});
