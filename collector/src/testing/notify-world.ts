import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  APPROVALS_STREAM,
  type ApprovalRequestMessage,
  approvalSubject,
  sidecarApprovalSubject,
} from '@pgwarden/policy';
import pino from 'pino';
import type { StartNatsOptions } from '../../../test/harness/index.js';
import type { ApprovalNotificationOptions } from '../approvals/approval-notifier-config.js';
import type { NoticeKind } from '../approvals/notification-delivery.js';
import type { Collector, CollectorOptions } from '../collector.js';
import { approvalRequest } from './approval-messages.js';
import { type ApprovalsFixture, approversYaml, startApprovalsFixture } from './approvals-fixture.js';
import { waitFor } from './wait-for.js';
import { startWebhookReceiver, type WebhookReceiver } from './webhook-receiver.js';

/**
 * Test support for approval notifications: an approvals fixture (its own nats-server and store, approver `alice` of
 * group dba), a webhook signing secret's file (`secretFile`), a client playing the sidecars, webhook receivers at a path holding `urlToken`, and notifying
 * collectors whose debug log lines are kept in `logs`.
 */
export async function startNotifyWorld(
  urlToken: string,
  aliceToken: string,
  signingSecret: string,
  natsOptions?: StartNatsOptions,
) {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-notify-'));
  // The webhook signing secret, in a file as the chart mounts it.
  const secretFile = join(dir, 'signing-secret');
  writeFileSync(secretFile, `${signingSecret}\n`);
  const fx: ApprovalsFixture = await startApprovalsFixture(
    approversYaml({ alice: { token: aliceToken, groups: ['dba'] } }),
    aliceToken,
    natsOptions,
  );
  // Reconnects at once after a NATS restart.
  const nc: NatsConnection = await connect({ servers: fx.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const logs: string[] = [];
  const receivers: WebhookReceiver[] = [];
  const running: Collector[] = [];

  const world = {
    fx,
    nc,
    dir,
    secretFile,
    logs,
    async receiver(respond?: Parameters<typeof startWebhookReceiver>[1]): Promise<WebhookReceiver> {
      const r = await startWebhookReceiver(urlToken, respond);
      receivers.push(r);
      return r;
    },
    /** A fresh pair of consumer names: `<name>` for requests, `<name>-outcomes` for closings. */
    durable: () => `notify-${randomUUID().slice(0, 8)}`,
    /**
     * A collector posting to `url` (written to a file, as the chart mounts it) through consumers `durable` and
     * `<durable>-outcomes`, resolved once they exist: they deliver only what is published after they were created.
     */
    async notifying(
      url: string,
      durable: string,
      over: Partial<ApprovalNotificationOptions> = {},
      more: Partial<CollectorOptions> = {},
    ): Promise<Collector> {
      const urlFile = join(dir, `url-${randomUUID()}`);
      writeFileSync(urlFile, `${url}\n`);
      const c = await fx.start({
        logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) }),
        approvalNotifications: {
          webhookUrlFile: urlFile,
          durable,
          outcomesDurable: `${durable}-outcomes`,
          retry: { baseDelayMs: 50 },
          ...over,
        },
        ...more,
      });
      running.push(c);
      const jsm = await jetstreamManager(nc);
      const names = over.outcomes === false ? [durable] : [durable, `${durable}-outcomes`];
      for (const name of names)
        await waitFor(() =>
          jsm.consumers.info(APPROVALS_STREAM, name).then(
            () => true,
            () => false,
          ),
        );
      return c;
    },
    /** On the subject of `namespace` as sidecars publish, or without one as earlier sidecars did. */
    async publish(kind: 'request' | 'closed', msg: { id: string }, namespace?: string): Promise<void> {
      const subject =
        namespace === undefined ? approvalSubject(kind, msg.id) : sidecarApprovalSubject(kind, namespace, msg.id);
      await jetstream(nc).publish(subject, JSON.stringify(msg));
    },
    async held(over: Partial<ApprovalRequestMessage> = {}): Promise<ApprovalRequestMessage> {
      const r = approvalRequest(over);
      await world.publish('request', r);
      return r;
    },
    /** `c`'s pgwarden_collector_approval_notifications_total of `kind`, by outcome. */
    async notifications(c: Collector, kind: NoticeKind = 'request'): Promise<Record<string, number>> {
      const text = await (await fetch(`${c.url}/metrics`)).text();
      const out: Record<string, number> = {};
      const counted = /^pgwarden_collector_approval_notifications_total\{kind="(\w+)",outcome="(\w+)"\} (\d+)/gm;
      for (const m of text.matchAll(counted)) if (m[1] === kind) out[m[2]] = Number(m[3]);
      return out;
    },
    async stop(c: Collector): Promise<void> {
      const at = running.indexOf(c);
      if (at < 0) return;
      running.splice(at, 1);
      await c.stop();
    },
    /**
     * Stops the collectors a failed test left running: every notifying collector's consumers take every message,
     * so one left over would post and record the next test's requests too.
     */
    async stopAll(): Promise<void> {
      for (const c of running.splice(0)) await c.stop();
    },
    async close(): Promise<void> {
      for (const c of running) await c.stop();
      for (const r of receivers) await r.close();
      await nc.close();
      await fx.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return world;
}

export type NotifyWorld = Awaited<ReturnType<typeof startNotifyWorld>>;
