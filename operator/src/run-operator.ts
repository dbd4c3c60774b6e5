/**
 * The operator process: caches + reconciler (active only while holding the Lease), the admission webhook (every
 * replica serves it from its own cache), webhook TLS (self-managed or files from cert-manager), and an HTTP
 * endpoint for health and Prometheus metrics.
 */
import { readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { type Logger, pino } from 'pino';
import { LeaderElector } from './controller/leader-election.js';
import { PolicyController } from './controller/policy-controller.js';
import type { RolloutStrategy } from './controller/reconcile-policy.js';
import { OperatorEvents } from './core/operator-events.js';
import { attachLogging, createMetrics } from './observability.js';
import type { KeyPairPem } from './tls/certificates.js';
import { WebhookTlsManager } from './tls/webhook-tls.js';
import { AdmissionServer } from './webhook/admission-server.js';
import type { SidecarConfig } from './webhook/sidecar-config.js';

export interface OperatorConfig {
  /** The operator's own namespace: Lease and webhook TLS Secret live here. */
  namespace: string;
  watchNamespace?: string;
  identity?: string;
  leaderElection: boolean;
  leaseName: string;
  webhook: {
    enabled: boolean;
    port: number;
    tls: 'self' | 'files';
    certDir?: string;
    secretName: string;
    serviceName: string;
    configName: string;
    certValidityMs?: number;
    /** files mode: how often to look for a renewed certificate (default 10 s). */
    certReloadMs?: number;
  };
  metricsPort: number;
  sidecar: SidecarConfig;
  rollout: RolloutStrategy;
  /** Annotate a policy's running pods when its content changes (PolicyControllerOptions.refreshPods). */
  refreshPods?: boolean;
  resyncMs: number;
  /** Secret in `namespace` with the sidecars' NATS user; copied to policy namespaces (see SidecarConfig). */
  auditCredentialsSource?: string;
  /** Secret in `namespace` with the sidecars' audit signing key; copied to policy namespaces (see SidecarConfig). */
  auditSigningKeySource?: string;
  /** Secret in `namespace` with the CA bundle sidecars verify NATS with; copied to policy namespaces (SidecarConfig). */
  auditNatsCaSource?: string;
  kubeconfig?: KubeConfig;
}

export interface RunningOperator {
  events: OperatorEvents;
  controller: PolicyController;
  webhookPort?: number;
  metricsPort: number;
  stop(): Promise<void>;
}

export async function runOperator(cfg: OperatorConfig, log: Logger): Promise<RunningOperator> {
  const kc = cfg.kubeconfig ?? loadKubeConfig();
  const events = new OperatorEvents();
  attachLogging(events, log);
  const registry = createMetrics(events);
  const identity = cfg.identity ?? `${hostname()}_${process.pid}`;

  const controller = new PolicyController({
    kc,
    events,
    sidecar: cfg.sidecar,
    defaultRollout: cfg.rollout,
    refreshPods: cfg.refreshPods,
    namespace: cfg.watchNamespace,
    auditCredentials: cfg.auditCredentialsSource
      ? { namespace: cfg.namespace, name: cfg.auditCredentialsSource }
      : undefined,
    auditSigningKey: cfg.auditSigningKeySource
      ? { namespace: cfg.namespace, name: cfg.auditSigningKeySource }
      : undefined,
    auditNatsCa: cfg.auditNatsCaSource ? { namespace: cfg.namespace, name: cfg.auditNatsCaSource } : undefined,
    // Real API servers send bookmarks about once a minute; a watch silent for 3 minutes is presumed dead.
    watch: { resyncMs: cfg.resyncMs, watchdogMs: 180_000, watchTimeoutSeconds: 290 },
  });
  await controller.start();

  let elector: LeaderElector | undefined;
  if (cfg.leaderElection) {
    elector = new LeaderElector(kc, { namespace: cfg.namespace, name: cfg.leaseName, identity }, events, {
      onStartedLeading: () => controller.activate(),
      onStoppedLeading: () => controller.deactivate(),
    });
    elector.start();
  } else {
    await controller.activate();
  }

  let admission: AdmissionServer | undefined;
  let tls: WebhookTlsManager | undefined;
  let certWatch: NodeJS.Timeout | undefined;
  let webhookPort: number | undefined;
  if (cfg.webhook.enabled) {
    let initial: KeyPairPem | undefined;
    const swap = (kp: KeyPairPem) => {
      if (admission) admission.setCertificate(kp);
      else initial = kp;
    };
    if (cfg.webhook.tls === 'self') {
      tls = new WebhookTlsManager(
        kc,
        {
          namespace: cfg.namespace,
          secretName: cfg.webhook.secretName,
          serviceName: cfg.webhook.serviceName,
          webhookConfigName: cfg.webhook.configName,
          certValidityMs: cfg.webhook.certValidityMs,
          canWrite: () => !elector || elector.isLeader,
          onCertificate: swap,
        },
        events,
      );
      // Followers wait until the leader has written the Secret.
      while (!initial) {
        await tls.reconcile().catch((err) => events.emit('tls.error', { error: String(err?.message ?? err) }));
        if (!initial) await new Promise((r) => setTimeout(r, 2000));
      }
      tls.start();
    } else {
      const dir = cfg.webhook.certDir ?? '/etc/pgwarden/webhook-tls';
      const load = async () => ({
        certPem: await readFile(join(dir, 'tls.crt'), 'utf8'),
        keyPem: await readFile(join(dir, 'tls.key'), 'utf8'),
      });
      initial = await load();
      // cert-manager renews into the mounted Secret; kubelet updates the files; pick them up.
      let last = (await stat(join(dir, 'tls.crt'))).mtimeMs;
      certWatch = setInterval(async () => {
        try {
          const m = (await stat(join(dir, 'tls.crt'))).mtimeMs;
          if (m !== last) {
            last = m;
            swap(await load());
            events.emit('tls.issued', { notAfter: new Date().toISOString(), reason: 'loaded' });
          }
        } catch (err) {
          events.emit('tls.error', { error: String(err) });
        }
      }, cfg.webhook.certReloadMs ?? 10_000);
    }
    admission = new AdmissionServer({
      tls: initial!,
      sidecar: cfg.sidecar,
      events,
      policies: (ns) => controller.policiesIn(ns),
      maskingRules: (ns) => controller.maskingRulesIn(ns),
      ready: () => controller.synced,
    });
    webhookPort = await admission.listen(cfg.webhook.port);
  }

  const metrics: Server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('Content-Type', registry.contentType);
      return void res.end(await registry.metrics());
    }
    if (req.url === '/healthz') return void res.end('ok');
    if (req.url === '/readyz') {
      res.statusCode = controller.synced ? 200 : 503;
      return void res.end(controller.synced ? 'ok' : 'caches not synced');
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((r) => metrics.listen(cfg.metricsPort, r));
  const metricsPort = (metrics.address() as { port: number }).port;
  log.info({ identity, webhookPort, metricsPort, leaderElection: cfg.leaderElection }, 'pgwarden operator started');

  return {
    events,
    controller,
    webhookPort,
    metricsPort,
    async stop() {
      clearInterval(certWatch);
      tls?.stop();
      await admission?.close();
      await elector?.stop();
      await controller.stop();
      metrics.closeAllConnections();
      await new Promise<void>((r) => metrics.close(() => r()));
    },
  };
}

/** JSON logs to stderr; nothing the operator logs carries Secret data, `redact` guards against mistakes. */
export function createOperatorLogger(level = 'info'): Logger {
  return pino(
    { name: 'pgwarden-operator', level, redact: ['*.password', '*.token', '*.keyPem', '*.key'] },
    pino.destination(2),
  );
}

/** In-cluster service account when running in a pod, else $KUBECONFIG / ~/.kube/config. */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  return kc;
}
