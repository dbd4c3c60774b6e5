import { randomUUID } from 'node:crypto';
import {
  type AuditApproval,
  type AuditChainHead,
  type AuditControl,
  type AuditError as AuditErrorBody,
  type AuditEvent,
  type AuditEventType,
  type AuditIdentity,
  type AuditMasking,
  type AuditPolicyRef,
  type AuditResult,
  type AuditResultSample,
  type AuditSigner,
  type ChainState,
  canonicalJson,
  formatAuditTime,
  newChain,
  redactSecrets,
  sealEventToJson,
  type UnsealedAuditEvent,
} from '@pgwarden/policy';
import type { SessionInfo, StatementRecord, StatementResult } from '../proxy/hooks.js';
import { AUDIT_JSON, type AuditSink } from './audit-sink.js';
import { chainCheckpoints, type SignableChain } from './chain-checkpoints.js';
import { nowMicros } from './drop-tracker.js';
import { buildStatementEvents, type StatementEventOptions } from './statement-events.js';
import { sealStatementJson, statementJsonSession } from './statement-json.js';

export interface AuditRecorderOptions {
  /** Names this sidecar process's own chain (policy and gap events): `sidecar-<instanceId>`. */
  instanceId?: string;
  /** The sidecar's own workload (downward API), for `source` and for events outside any session. */
  source?: { pod?: string; namespace?: string; node?: string; version?: string };
  /** The policy in force now (hot reloads change it); statement events prefer the verdict's own. */
  policy?: () => AuditPolicyRef | undefined;
  /** The role the sidecar sets upstream (policy `role`). */
  role?: (info: SessionInfo) => string | undefined;
  /**
   * Record bind parameters when the statement's capture does not say (a sidecar without a policy); off by default.
   * Under a policy its `audit.captureParams` decides (StatementCapture).
   */
  captureParams?: boolean;
  /** Longest statement text kept (characters); longer text is cut and marked. Default 32768. */
  maxTextChars?: number;
  /**
   * Signs the chains (`--audit-signing-key`): each chain with events no checkpoint covers gets an `audit.checkpoint`
   * at most every `checkpointIntervalMs`, and at once after `session.end` and at close. Without it, none.
   */
  signer?: AuditSigner;
  /**
   * How often the sidecar's own chain records the heads of the session chains that grew (`audit.heads`) and, with
   * a signer, how often chains are signed. Default 1000.
   */
  checkpointIntervalMs?: number;
  /**
   * Every open session chain is named in an `audit.heads` event at least this often (ms), grown or not, so the
   * collector can tell a session whose sidecar is gone from one that is merely idle. Default 60000.
   */
  headsRefreshMs?: number;
  /**
   * Identical refused logins within this long of one recorded are folded into one later `auth.refused` with
   * `refusal.repeated` (default 60000; 0 records each on its own).
   */
  refusalRepeatWindowMs?: number;
  now?: () => number;
}

/** Per-statement settings that follow the policy in force (hot reloads change them between statements). */
export interface StatementCapture {
  captureResults?: 'none' | 'summary' | 'rows';
  /** The policy's `audit.captureParams`; undefined: the recorder's own option. */
  captureParams?: boolean;
}

export interface SessionAuditor {
  statement(record: StatementRecord, capture?: StatementCapture): void;
  approval(type: Extract<AuditEventType, `approval.${string}`>, approval: AuditApproval): void;
  end(reason: { error?: string; reason?: string }): void;
}

export interface AuditRecorder {
  readonly sink: AuditSink;
  /** Whether bound values are recorded where no policy says (the recorder's `captureParams` option). */
  readonly captureParams?: boolean;
  /** Emits `session.start` and returns the session's chain; `at` names the policy and role in force for it. */
  openSession(info: SessionInfo, at?: { policy?: AuditPolicyRef; role?: string }): SessionAuditor;
  /** The open session with this id (approval events arrive from the governance by session id). */
  session(id: string): SessionAuditor | undefined;
  policyLoaded(policy: AuditPolicyRef): void;
  policyRejected(error: AuditErrorBody, policyName?: string): void;
  /** A control message applied (an approver ended a session, suspended or resumed a policy): `control.applied`. */
  controlApplied(control: AuditControl): void;
  /** A refused login: `auth.refused` in the sidecar's own chain (no session was opened). */
  authRefused(refusal: LoginRefusal): void;
  /** False while the sink cannot make events durable. */
  ready(): boolean;
  /** Signs what is still unsigned (with a signer), then closes the sink. */
  close(): Promise<void>;
}

/** A refused login as far as the client was identified; deliberately has no field for the password or token. */
export interface LoginRefusal {
  reason: string;
  code: string;
  message?: string;
  mode?: string;
  client: { address: string; port: number };
  user?: string;
  database?: string;
  application?: string;
  /** The pod's workload identity (downward API): the claimed identity of anything on its loopback. */
  workload?: { namespace?: string; serviceAccount?: string; pod?: string; node?: string };
  /** The policy of the listener that refused. */
  policy?: AuditPolicyRef;
}

/** Extra detail a StatementResult may carry (masking and result capture add them; both optional). */
export interface StatementResultExtras {
  masking?: AuditMasking;
  sample?: AuditResultSample;
}

/**
 * Turns session hooks into chained audit events: `session.start`, one `statement` per statement, `session.end`;
 * and the sidecar's own chain for policy and gap events. Work per statement is its canonical JSON and one sha256
 * over it: written directly (statement-json.ts) for sinks that take text (`emitJson`: file, stdout), through the
 * event object for the others. Rows are never looked at here.
 */
export function createAuditRecorder(sink: AuditSink, options: AuditRecorderOptions = {}): AuditRecorder {
  const now = options.now ?? nowMicros;
  const instanceId = options.instanceId ?? randomUUID();
  // Parts every event repeats are deep-frozen: canonicalJson then encodes each of them once (see canonical-json.ts).
  const source = deepFreeze({ instance: instanceId, ...pick(options.source, ['pod', 'namespace', 'version']) });
  const policies = new Map<string, AuditPolicyRef>();
  // Verdicts of one policy share its ref object: look that up first instead of building a key per statement.
  const refOf = new WeakMap<AuditPolicyRef, AuditPolicyRef>();
  const policyRef = (p: AuditPolicyRef | undefined): AuditPolicyRef | undefined => {
    if (!p) return undefined;
    const known = refOf.get(p);
    if (known !== undefined && known.name === p.name && known.hash === p.hash) return known;
    const key = `${p.name}\n${p.hash}`;
    let ref = policies.get(key);
    if (!ref) {
      if (policies.size > 100) policies.clear();
      ref = deepFreeze({ name: p.name, hash: p.hash });
      policies.set(key, ref);
    }
    refOf.set(p, ref);
    return ref;
  };
  const instanceChain = newChain();
  const instanceSession = `sidecar-${instanceId}`;
  const instanceIdentity: AuditIdentity = deepFreeze({
    groups: [],
    ...pick(options.source, ['namespace', 'pod', 'node']),
  });

  const emitJson = sink.emitJson?.bind(sink);
  const emit = (chain: ChainState, e: UnsealedAuditEvent) => {
    const { event, json } = sealEventToJson(e, chain);
    if (emitJson) {
      emitJson(json, event.session.id, event.session.seq);
      return;
    }
    Object.defineProperty(event, AUDIT_JSON, { value: json });
    sink.emit(event as unknown as Record<string, unknown>);
  };
  const captureParams = options.captureParams ?? false;
  const maxTextChars = options.maxTextChars ?? 32_768;
  // One options object per combination of settings, not one per statement.
  const statementOptions = new Map<StatementCapture['captureResults'], StatementEventOptions>();
  const withParams = new Map<StatementCapture['captureResults'], StatementEventOptions>();
  const optionsFor = (capture: StatementCapture | undefined): StatementEventOptions => {
    const captureResults = capture?.captureResults;
    const params = capture?.captureParams ?? captureParams;
    const cache = params ? withParams : statementOptions;
    let o = cache.get(captureResults);
    if (o === undefined) {
      o = { captureParams: params, maxTextChars, captureResults };
      cache.set(captureResults, o);
    }
    return o;
  };
  // The identity and policy of the chain's latest event: its checkpoint repeats them, so that both travel on the
  // same NATS subject (derived from identity.namespace and policy.name) and pass the same namespace check.
  let instanceTail: Pick<UnsealedAuditEvent, 'identity' | 'policy'> = { identity: instanceIdentity };
  const instanceSigned: SignableChain = {
    id: instanceSession,
    state: instanceChain,
    unsigned: false,
    append: (checkpoint) =>
      emit(instanceChain, {
        v: 1,
        type: 'audit.checkpoint',
        time: formatAuditTime(now()),
        session: { id: instanceSession },
        source,
        ...instanceTail,
        checkpoint,
      }),
  };
  const checkpoints = options.signer ? chainCheckpoints(options.signer, instanceSigned) : undefined;
  const instanceEvent = (type: AuditEventType, body: Partial<AuditEvent>) => {
    const policy = body.policy ?? options.policy?.();
    const event: UnsealedAuditEvent = {
      v: 1,
      type,
      time: formatAuditTime(now()),
      session: { id: instanceSession },
      source,
      identity: instanceIdentity,
      ...body,
      ...(policy ? { policy } : {}),
    };
    instanceTail = { identity: event.identity, ...(event.policy ? { policy: event.policy } : {}) };
    emit(instanceChain, event);
    instanceSigned.unsigned = true;
  };

  sink.onGap?.((gap) => instanceEvent('audit.gap', { gap }));

  // Refused logins being folded (authRefused): per identical refusal, how many more came within the window.
  const refusalWindowMs = options.refusalRepeatWindowMs ?? 60_000;
  // `varied`: a fold by client address, reason and code alone, for a client varying what it claims (see below).
  const refusals = new Map<
    string,
    { repeated: number; last: RefusalBody; timer: NodeJS.Timeout; address: string; varied: boolean }
  >();
  // Per client address, how many exact folds are open: past DISTINCT_REFUSALS_PER_CLIENT the client is varying the
  // strings it chooses (user, database, application) and its refusals fold coarsely.
  const distinct = new Map<string, number>();
  const flushRefusal = (key: string) => {
    const f = refusals.get(key);
    if (!f) return;
    refusals.delete(key);
    clearTimeout(f.timer);
    if (!f.varied) {
      const n = (distinct.get(f.address) ?? 1) - 1;
      if (n > 0) distinct.set(f.address, n);
      else distinct.delete(f.address);
    }
    if (f.repeated > 0)
      instanceEvent('auth.refused', {
        ...f.last,
        refusal: { ...f.last.refusal, repeated: f.repeated, ...(f.varied ? { varied: true } : {}) },
      });
  };
  const flushRefusals = () => {
    for (const key of [...refusals.keys()]) flushRefusal(key);
  };
  const open = new Map<string, SessionAuditor>();

  // Session chains whose head the sidecar's own chain has yet to record: the open ones (checked each tick for
  // growth) and those that ended since the last tick. `reported` is the seq the last heads event named.
  const live = new Map<string, HeadWatch>();
  let ended: HeadWatch[] = [];
  const refreshMs = options.headsRefreshMs ?? 60_000;
  const headOf = (w: HeadWatch, out: AuditChainHead[], t: number) => {
    const { seq, prevHash } = w.state;
    if (prevHash === null) return;
    // An open chain that did not grow is named again once per refresh period: its sidecar still holds it open.
    if (seq <= w.reported && (w.ended || t - w.namedAt < refreshMs)) return;
    w.reported = seq;
    w.namedAt = t;
    out.push({ id: w.id, seq, hash: prevHash });
  };
  const emitHeads = () => {
    const t = performance.now();
    const chains: AuditChainHead[] = [];
    for (const w of live.values()) headOf(w, chains, t);
    for (const w of ended) headOf(w, chains, t);
    ended = [];
    // Bounded events: a sidecar with thousands of busy sessions writes several, not one of unbounded size.
    for (let i = 0; i < chains.length; i += HEADS_PER_EVENT)
      instanceEvent('audit.heads', { heads: { chains: chains.slice(i, i + HEADS_PER_EVENT), refreshMs } });
  };
  // One timer (unref'd: it never keeps the process alive) for heads and checkpoints, so that each tick writes the
  // sessions' checkpoints, then the heads that name them, then the checkpoint of the sidecar's chain over those.
  const tick = () => (checkpoints ? checkpoints.sweep(emitHeads) : emitHeads());
  const timer = setInterval(tick, options.checkpointIntervalMs ?? 1000);
  timer.unref();

  return {
    sink,
    captureParams,
    ready: () => sink.ready(),
    session: (id) => open.get(id),
    close: () => {
      clearInterval(timer);
      // Folded refusals first, so the last heads and checkpoints cover them.
      flushRefusals();
      if (checkpoints) checkpoints.close(emitHeads);
      else emitHeads();
      return sink.close();
    },
    policyLoaded: (policy) => instanceEvent('policy.loaded', { policy }),
    policyRejected: (error, policyName) =>
      instanceEvent('policy.rejected', {
        error: { code: error.code, message: redactSecrets(error.message) },
        ...(policyName ? { policy: { name: policyName, hash: '' } } : {}),
      }),
    controlApplied: (control) => instanceEvent('control.applied', { control }),
    authRefused(r) {
      const body = refusalBody(r, policyRef);
      if (refusalWindowMs <= 0) {
        instanceEvent('auth.refused', body);
        return;
      }
      // A client in a retry loop (a bad token, a full listener) must not flood the chain: the first refusal is
      // recorded at once, identical ones (same everything but the client's port) within the window are counted
      // into one later event with `repeated`, like the collector folds repeated reads.
      // A client that varies what it claims would open a fold per string: past a few, its refusals fold by its
      // address, the reason and the code alone (`refusal.varied`), so no string it chooses makes a new event.
      const address = body.client.address;
      let key = JSON.stringify([body.policy ?? null, body.identity, { ...body.client, port: 0 }, body.refusal]);
      const varied = !refusals.has(key) && (distinct.get(address) ?? 0) >= DISTINCT_REFUSALS_PER_CLIENT;
      if (varied) key = JSON.stringify(['varied', address, body.refusal.reason, body.refusal.code]);
      const seen = refusals.get(key);
      if (seen) {
        seen.repeated++;
        seen.last = body;
        return;
      }
      if (refusals.size >= MAX_FOLDED_REFUSALS) flushRefusals();
      instanceEvent('auth.refused', varied ? { ...body, refusal: { ...body.refusal, varied: true } } : body);
      const timer = setTimeout(() => flushRefusal(key), refusalWindowMs);
      timer.unref();
      refusals.set(key, { repeated: 0, last: body, timer, address, varied });
      if (!varied) distinct.set(address, (distinct.get(address) ?? 0) + 1);
    },
    openSession(info, at) {
      const chain = newChain();
      const sessionPolicy = policyRef(at?.policy ?? options.policy?.());
      const openedAt = now();
      let statements = 0;
      let lastPolicy: AuditPolicyRef | undefined;
      const identity: AuditIdentity = deepFreeze({
        groups: [...info.identity.groups],
        ...pick(info.identity, ['namespace', 'serviceAccount', 'pod', 'node', 'user', 'issuer']),
      });
      const role = at?.role ?? options.role?.(info);
      const database = deepFreeze({
        host: info.upstream.host,
        port: info.upstream.port,
        name: info.upstream.database,
        user: info.upstream.user,
        ...(role ? { role } : {}),
      });
      const base = (type: AuditEventType, policy = sessionPolicy): UnsealedAuditEvent => {
        // Plain assignments, not spreads: this runs once per statement (docs/benchmarks.md).
        const e: UnsealedAuditEvent = {
          v: 1,
          type,
          time: formatAuditTime(now()),
          session: { id: info.id },
          source,
          identity,
          database,
        };
        if (policy) e.policy = policy;
        return e;
      };
      // Checkpoints carry the policy the session's own events (start, approvals, end) carry, hence its subject.
      const signed: SignableChain = {
        id: info.id,
        state: chain,
        unsigned: false,
        append: (checkpoint) => emit(chain, { ...base('audit.checkpoint', sessionPolicy ?? lastPolicy), checkpoint }),
      };
      const emitSession = (e: UnsealedAuditEvent) => {
        emit(chain, e);
        signed.unsigned = true;
      };
      emitSession({
        ...base('session.start'),
        client: {
          address: info.client.address,
          port: info.client.port,
          ...(info.startup.applicationName ? { application: info.startup.applicationName } : {}),
        },
      });
      // Sinks that take text get statement events encoded straight to canonical JSON (statement-json.ts).
      const direct = emitJson && statementJsonSession(info.id, { database, identity, source });
      const time = () => formatAuditTime(now());
      const out = (json: string, seq: number) => emitJson!(json, info.id, seq);
      const auditor: SessionAuditor = {
        statement(record, capture) {
          const policy = policyRef(record.verdict.policy) ?? sessionPolicy;
          lastPolicy = policy ?? lastPolicy;
          const opts = optionsFor(capture);
          signed.unsigned = true;
          if (direct) {
            statements += sealStatementJson(
              direct,
              chain,
              record,
              opts,
              policy ? canonicalJson(policy) : '',
              time,
              out,
            );
            return;
          }
          for (const body of buildStatementEvents(record, opts)) {
            statements++;
            emit(chain, Object.assign(base('statement', policy), body));
          }
        },
        approval(type, approval) {
          emitSession({ ...base(type, sessionPolicy ?? lastPolicy), approval });
        },
        end(reason) {
          open.delete(info.id);
          const watch = live.get(info.id);
          live.delete(info.id);
          emitSession({
            ...base('session.end', sessionPolicy ?? lastPolicy),
            end: {
              statements,
              durationMs: round3((now() - openedAt) / 1000),
              ...(reason.reason ? { reason: reason.reason } : {}),
              ...(reason.error ? { error: redactSecrets(reason.error) } : {}),
            },
          });
          // A closed session is signed to its last event, not only up to the last sweep.
          checkpoints?.finish(signed);
          if (watch) {
            watch.ended = true;
            ended.push(watch);
          }
        },
      };
      checkpoints?.track(signed);
      live.set(info.id, { id: info.id, state: chain, reported: 0, namedAt: 0, ended: false });
      open.set(info.id, auditor);
      return auditor;
    },
  };
}

type RefusalBody = Required<Pick<AuditEvent, 'identity' | 'client' | 'refusal'>> & Pick<AuditEvent, 'policy'>;

/** The body of an `auth.refused` event; client-chosen strings are capped so a hostile startup packet cannot bloat the chain. */
function refusalBody(
  r: LoginRefusal,
  policyRef: (p: AuditPolicyRef | undefined) => AuditPolicyRef | undefined,
): RefusalBody {
  return {
    ...(r.policy ? { policy: policyRef(r.policy) } : {}),
    identity: { groups: [], ...pick(r.workload, ['namespace', 'serviceAccount', 'pod', 'node']) },
    client: {
      address: r.client.address,
      port: r.client.port,
      ...(r.application ? { application: cutText(r.application, 256) } : {}),
    },
    refusal: {
      reason: r.reason,
      code: r.code,
      ...(r.message ? { message: cutText(redactSecrets(r.message), 1024) } : {}),
      ...(r.user ? { user: cutText(r.user, 256) } : {}),
      ...(r.database ? { database: cutText(r.database, 256) } : {}),
      ...(r.mode ? { mode: r.mode } : {}),
    },
  };
}

/** Distinct refusals folded at once; beyond it the pending folds are written out. */
const MAX_FOLDED_REFUSALS = 1000;

/** Exact folds one client address may have open before its refusals fold by address, reason and code alone. */
const DISTINCT_REFUSALS_PER_CLIENT = 20;

interface HeadWatch {
  readonly id: string;
  readonly state: ChainState;
  /** The seq the last heads event named, and when (performance.now()). */
  reported: number;
  namedAt: number;
  ended: boolean;
}

/** Chains named per `audit.heads` event (~130 bytes each). */
const HEADS_PER_EVENT = 200;

/** `s`, cut to `max` characters with an ellipsis: client-chosen strings must not bloat the chain. */
export const cutText = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, max)}…`);

export const round3 = (n: number) => Math.round(n * 1000) / 1000;

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

function pick<T extends object, K extends keyof T>(o: T | undefined, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  if (!o) return out;
  for (const k of keys) if (o[k] !== undefined && o[k] !== '') out[k] = o[k];
  return out;
}

export type { AuditResult, StatementResult };
