import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AUDIT_CREDENTIALS_SECRET,
  AUDIT_NATS_CA_SECRET,
  AUDIT_SIGNING_KEY_SECRET,
  crdFiles,
  createOperatorLogger,
  DEFAULT_SIDECAR_CONFIG,
  loadKubeConfig,
  type OperatorConfig,
  runOperator,
} from '@pgwarden/operator';
import { type Command, InvalidArgumentError, Option } from 'commander';

/** "90s", "10m", "24h", "500ms". */
export function parseDurationMs(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`${flag} must be a duration like 30s, 10m or 24h`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2]]!);
}

function port(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`${flag} must be a port number`);
  return n;
}

/** The `operator run` flags (commander's camel-cased options) as an OperatorConfig; throws InvalidArgumentError. */
export function operatorConfigFromFlags(o: Record<string, any>): OperatorConfig {
  const requests: Record<string, string> = { cpu: o.sidecarCpuRequest, memory: o.sidecarMemoryRequest };
  const limits: Record<string, string> = {};
  if (o.sidecarCpuLimit) limits.cpu = o.sidecarCpuLimit;
  if (o.sidecarMemoryLimit) limits.memory = o.sidecarMemoryLimit;
  if (o.auditUrl && !/^(nats|tls):\/\/|^stdout$|^file:/.test(o.auditUrl)) {
    throw new InvalidArgumentError('--audit-url must be nats://host:port (or stdout, file:PATH)');
  }
  const nats = /^(nats|tls):\/\//.test(String(o.auditUrl ?? ''));
  if (o.auditCredentialsSource && !nats) {
    throw new InvalidArgumentError('--audit-credentials-source needs --audit-url nats://host:port');
  }
  if (o.auditNatsCaSource && o.auditNatsCaConfigmap) {
    throw new InvalidArgumentError('--audit-nats-ca-source and --audit-nats-ca-configmap name the same CA: give one');
  }
  if ((o.auditNatsCaSource || o.auditNatsCaConfigmap) && !nats) {
    throw new InvalidArgumentError(
      '--audit-nats-ca-source/--audit-nats-ca-configmap need --audit-url nats:// or tls://',
    );
  }
  return {
    namespace: o.namespace,
    watchNamespace: o.watchNamespace,
    leaderElection: o.leaderElect,
    leaseName: o.leaseName,
    webhook: {
      enabled: o.webhook,
      port: port('--webhook-port', o.webhookPort),
      tls: o.webhookTls,
      certDir: o.webhookCertDir,
      secretName: o.webhookSecret,
      serviceName: o.webhookService,
      configName: o.webhookConfig,
      certValidityMs: parseDurationMs('--webhook-cert-validity', o.webhookCertValidity),
    },
    metricsPort: port('--metrics-port', o.metricsPort),
    sidecar: {
      ...DEFAULT_SIDECAR_CONFIG,
      image: o.sidecarImage,
      imagePullPolicy: o.sidecarImagePullPolicy,
      resources: { requests, ...(Object.keys(limits).length ? { limits } : {}) },
      httpPort: port('--sidecar-http-port', o.sidecarHttpPort),
      auditUrl: o.auditUrl,
      ...(o.auditCredentialsSource ? { auditCredentialsSecret: AUDIT_CREDENTIALS_SECRET } : {}),
      ...(o.auditSigningKeySource ? { auditSigningKeySecret: AUDIT_SIGNING_KEY_SECRET } : {}),
      ...(o.auditNatsCaSource
        ? { auditNatsCa: { kind: 'secret' as const, name: AUDIT_NATS_CA_SECRET } }
        : o.auditNatsCaConfigmap
          ? { auditNatsCa: { kind: 'configMap' as const, name: o.auditNatsCaConfigmap } }
          : {}),
    },
    auditCredentialsSource: o.auditCredentialsSource,
    auditSigningKeySource: o.auditSigningKeySource,
    auditNatsCaSource: o.auditNatsCaSource,
    rollout: o.rolloutStrategy,
    refreshPods: o.refreshPods === true,
    resyncMs: parseDurationMs('--resync', o.resync),
  };
}

export function registerOperator(program: Command): void {
  const op = program
    .command('operator')
    .description('Kubernetes operator: policy rendering, sidecar injection webhook, CRDs');

  const run = op
    .command('run')
    .description('run the controller and the admission webhook (in a pod, or against $KUBECONFIG)');
  const opt = (flags: string, description: string, def?: string, env?: string) => {
    const o = new Option(flags, description);
    if (def !== undefined) o.default(def);
    if (env) o.env(env);
    run.addOption(o);
  };
  opt('--namespace <ns>', "the operator's namespace (Lease, webhook TLS Secret)", 'pgwarden', 'POD_NAMESPACE');
  opt('--watch-namespace <ns>', 'only watch this namespace (default: all namespaces)');
  opt('--kubeconfig <file>', 'kubeconfig file (default: in-cluster service account, then $KUBECONFIG)');
  run.addOption(new Option('--no-leader-elect', 'run without a Lease (single replica only)'));
  opt('--lease-name <name>', 'coordination.k8s.io Lease used for leader election', 'pgwarden-operator');
  run.addOption(new Option('--no-webhook', 'do not serve the admission webhook'));
  opt('--webhook-port <port>', 'HTTPS port of the admission webhook', '9443');
  run.addOption(
    new Option(
      '--webhook-tls <mode>',
      'self: the operator manages a CA and serving certificate; files: read tls.crt/tls.key (cert-manager)',
    )
      .choices(['self', 'files'])
      .default('self'),
  );
  opt(
    '--webhook-cert-dir <dir>',
    'with --webhook-tls files: directory holding tls.crt and tls.key',
    '/etc/pgwarden/webhook-tls',
  );
  opt(
    '--webhook-secret <name>',
    'Secret (in --namespace) holding the self-managed CA and serving certificate',
    'pgwarden-webhook-tls',
  );
  opt(
    '--webhook-service <name>',
    'Service in front of the webhook (its DNS names go into the certificate)',
    'pgwarden-webhook',
  );
  opt('--webhook-config <name>', 'MutatingWebhookConfiguration whose caBundle the operator keeps current', 'pgwarden');
  opt(
    '--webhook-cert-validity <duration>',
    'lifetime of self-managed serving certificates (renewed with a third left)',
    '24h',
  );
  opt('--metrics-port <port>', 'HTTP port for /metrics, /healthz, /readyz', '8080');
  opt(
    '--sidecar-image <image>',
    'image of the injected sidecar',
    DEFAULT_SIDECAR_CONFIG.image,
    'PGWARDEN_SIDECAR_IMAGE',
  );
  run.addOption(
    new Option('--sidecar-image-pull-policy <policy>', 'imagePullPolicy of the sidecar')
      .choices(['Always', 'IfNotPresent', 'Never'])
      .default('IfNotPresent'),
  );
  opt('--sidecar-cpu-request <q>', 'sidecar CPU request', '50m');
  opt('--sidecar-memory-request <q>', 'sidecar memory request', '64Mi');
  opt('--sidecar-cpu-limit <q>', 'sidecar CPU limit (none by default)');
  opt('--sidecar-memory-limit <q>', 'sidecar memory limit', '256Mi');
  opt('--sidecar-http-port <port>', 'admin HTTP port of the first sidecar (health, metrics)', '9187');
  opt('--audit-url <url>', 'audit destination passed to sidecars (nats://host:4222)', undefined, 'PGWARDEN_AUDIT_URL');
  opt(
    '--audit-credentials-source <secret>',
    `Secret in --namespace (keys username, password): the NATS user sidecars publish audit events as; copied to each policy namespace as ${AUDIT_CREDENTIALS_SECRET}`,
    undefined,
    'PGWARDEN_AUDIT_CREDENTIALS_SOURCE',
  );
  opt(
    '--audit-signing-key-source <secret>',
    `Secret in --namespace (key signing.key): the Ed25519 key sidecars sign audit checkpoints with (\`pgwarden audit keygen\`); a Secret <secret>-<namespace> beside it wins for that namespace. Copied to each policy namespace as ${AUDIT_SIGNING_KEY_SECRET}`,
    undefined,
    'PGWARDEN_AUDIT_SIGNING_KEY_SOURCE',
  );
  opt(
    '--audit-nats-ca-source <secret>',
    `Secret in --namespace (key ca.crt): the CA bundle sidecars verify NATS's TLS certificate with (--audit-nats-ca); copied to each policy namespace as ${AUDIT_NATS_CA_SECRET}`,
    undefined,
    'PGWARDEN_AUDIT_NATS_CA_SOURCE',
  );
  opt(
    '--audit-nats-ca-configmap <name>',
    'ConfigMap (key ca.crt) present in every policy namespace, e.g. a trust-manager Bundle: the CA bundle sidecars verify NATS with (not copied)',
    undefined,
    'PGWARDEN_AUDIT_NATS_CA_CONFIGMAP',
  );
  run.addOption(
    new Option('--rollout-strategy <s>', 'default for policies without the pgwarden.dev/rollout-strategy annotation')
      .choices(['Workload', 'None'])
      .default('Workload'),
  );
  run.addOption(
    new Option(
      '--refresh-pods',
      "annotate a policy's running pods when its content changes, so kubelets deliver it at once (needs patch on pods)",
    ),
  );
  opt('--resync <duration>', 'period of full re-reconciliation', '10m');
  opt('--log-level <level>', 'pino log level (JSON logs on stderr)', 'info');
  run.action(async (o) => {
    const log = createOperatorLogger(o.logLevel);
    const cfg = operatorConfigFromFlags(o);
    cfg.kubeconfig = loadKubeConfig(o.kubeconfig);
    const running = await runOperator(cfg, log);
    const shutdown = async (signal: string) => {
      log.info({ signal }, 'shutting down');
      await running.stop();
      process.exit(0);
    };
    process.once('SIGTERM', () => void shutdown('SIGTERM'));
    process.once('SIGINT', () => void shutdown('SIGINT'));
  });

  op.command('crds')
    .description('write the CustomResourceDefinitions generated from the policy JSON Schemas')
    .option('--out-dir <dir...>', 'directories to write into', ['crds', 'charts/pgwarden/crds'])
    .option('--check', 'exit 1 when the files on disk differ from the generated ones (CI)')
    .action(async (o: { outDir: string[]; check?: boolean }) => {
      const files = crdFiles();
      let stale = 0;
      for (const dir of o.outDir) {
        for (const [name, text] of Object.entries(files)) {
          const path = join(dir, name);
          if (o.check) {
            const onDisk = await readFile(path, 'utf8').catch(() => '');
            if (onDisk !== text) {
              process.stderr.write(`${path} is out of date: run \`pgwarden operator crds\`\n`);
              stale++;
            }
          } else {
            await mkdir(dir, { recursive: true });
            await writeFile(path, text);
            process.stdout.write(`wrote ${path}\n`);
          }
        }
      }
      if (stale) process.exitCode = 1;
    });
}
