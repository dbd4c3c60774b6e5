import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { APPROVALS_STREAM, type ApprovalRequestMessage, parseApprovalRequest } from '../../policy/src/index.js';
import { natsApprovalGate } from '../../sidecar/src/governance/index.js';
import { startNats, type TestNats } from '../harness/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';
import { startTestIdp, type TestIdp } from './oidc-provider.js';

/**
 * The world of a `review` rule: the writer example policy (OIDC, held writes to orders, approvers group dba) on the
 * real sidecar, parser and PostgreSQL, its approval queue on a real nats-server. The test plays the collector over
 * `collectorNc`; the sidecar's gate has a connection of its own.
 */
export interface ReviewWorld {
  db: GovernanceDb;
  idp: TestIdp;
  nats: TestNats;
  sidecarNc: NatsConnection;
  collectorNc: NatsConnection;
  g: Governed;
  /** The policy as written to the sidecar's file. */
  policy: Record<string, any>;
  /** The approval stream's last sequence number (take it before a statement is held). */
  lastSeq(): Promise<number>;
  /** The approval requests stored after sequence `after`, in order. */
  requestsAfter(after: number): Promise<ApprovalRequestMessage[]>;
  /** The `n`th request stored after `after` (1-based), waiting up to ~5 s for it. */
  nthRequest(after: number, n: number): Promise<ApprovalRequestMessage>;
  close(): Promise<void>;
}

export async function startReviewWorld(
  name: string,
  opts: {
    /** Changes to the policy before it is written (grants, decision keys). */
    adjust?: (policy: Record<string, any>, db: GovernanceDb) => void | Promise<void>;
    sidecar?: Parameters<typeof startGoverned>[2]['sidecar'];
  } = {},
): Promise<ReviewWorld> {
  const [db, idp, nats] = await Promise.all([createGovernanceDb(name), startTestIdp(), startNats()]);
  const sidecarNc = await connect({ servers: nats.url });
  const collectorNc = await connect({ servers: nats.url });
  await (await jetstreamManager(collectorNc)).streams.add({
    name: APPROVALS_STREAM,
    subjects: ['pgwarden.approval.>'],
    allow_direct: true,
  });
  const policy = examplePolicy('writer-review.yaml');
  policy.spec.role = db.roles.writer;
  policy.spec.authentication.oidc.issuer = idp.issuer;
  await opts.adjust?.(policy, db);
  const g = await startGoverned(db.name, policy, {
    governance: { oidc: { ca: idp.ca }, approvals: natsApprovalGate({ connection: () => sidecarNc }) },
    ...(opts.sidecar ? { sidecar: opts.sidecar } : {}),
  });
  const lastSeq = async () =>
    (await (await jetstreamManager(collectorNc)).streams.info(APPROVALS_STREAM)).state.last_seq;
  const requestsAfter = async (after: number) => {
    const jsm = await jetstreamManager(collectorNc);
    const last = await lastSeq();
    const out: ApprovalRequestMessage[] = [];
    for (let seq = after + 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(APPROVALS_STREAM, { seq }).catch(() => null);
      const r = m?.subject.startsWith('pgwarden.approval.request.') ? parseApprovalRequest(m.data) : undefined;
      if (r) out.push(r);
    }
    return out;
  };
  return {
    db,
    idp,
    nats,
    sidecarNc,
    collectorNc,
    g,
    policy,
    lastSeq,
    requestsAfter,
    async nthRequest(after, n) {
      for (let i = 0; i < 250; i++) {
        const l = await requestsAfter(after);
        if (l.length >= n) return l[n - 1];
        await new Promise((res) => setTimeout(res, 20));
      }
      throw new Error(`no approval request #${n} arrived`);
    },
    async close() {
      await g.close();
      await sidecarNc.close();
      await collectorNc.close();
      await Promise.all([idp.close(), nats.stop(), db.drop()]);
    },
  };
}
