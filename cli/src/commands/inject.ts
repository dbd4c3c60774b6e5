import { readFile } from 'node:fs/promises';
import {
  DEFAULT_SIDECAR_CONFIG,
  InjectError,
  injectManifests,
  PolicyFilesError,
  readPolicyFiles,
} from '@pgwarden/operator';
import type { Command } from 'commander';

async function readInput(file: string): Promise<string> {
  if (file !== '-') return readFile(file, 'utf8');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function registerInject(program: Command): void {
  program
    .command('inject')
    .description(
      'print manifests with the pgwarden sidecar injected, exactly as the admission webhook would (like `linkerd inject`)',
    )
    .requiredOption(
      '-f, --filename <file>',
      'manifests (multi-document YAML; - for stdin): Pods, Deployments, StatefulSets, DaemonSets, Jobs, CronJobs',
    )
    .requiredOption('--policies <path>', 'DatabaseAccessPolicy/MaskingRule YAML file or directory')
    .option('-n, --namespace <ns>', 'namespace for objects without one', 'default')
    .option('--sidecar-image <image>', 'image of the injected sidecar', DEFAULT_SIDECAR_CONFIG.image)
    .option(
      '--sidecar-http-port <port>',
      'admin HTTP port of the first sidecar',
      String(DEFAULT_SIDECAR_CONFIG.httpPort),
    )
    .option('--audit-url <url>', 'audit destination passed to sidecars (nats://...)')
    .option(
      '--audit-credentials-secret <name>',
      'Secret in the workload namespace (keys username, password) with the NATS user the sidecars publish as',
    )
    .option(
      '--audit-signing-key-secret <name>',
      'Secret in the workload namespace (key signing.key) the sidecars sign audit checkpoints with',
    )
    .option(
      '--audit-nats-ca-secret <name>',
      "Secret in the workload namespace (key ca.crt) the sidecars verify NATS's TLS certificate with",
    )
    .option(
      '--audit-nats-ca-configmap <name>',
      'the same CA bundle as a ConfigMap in the workload namespace (e.g. a trust-manager Bundle)',
    )
    .action(async (o) => {
      try {
        if (o.auditNatsCaSecret && o.auditNatsCaConfigmap)
          throw new InjectError('give --audit-nats-ca-secret or --audit-nats-ca-configmap, not both');
        const { policies, maskingRules } = await readPolicyFiles(o.policies);
        const config = {
          ...DEFAULT_SIDECAR_CONFIG,
          image: o.sidecarImage,
          httpPort: Number(o.sidecarHttpPort),
          auditUrl: o.auditUrl,
          // Without the operator nobody copies these Secrets into the namespace: they are named as they are there.
          auditCredentialsSecret: o.auditCredentialsSecret,
          auditSigningKeySecret: o.auditSigningKeySecret,
          ...(o.auditNatsCaSecret || o.auditNatsCaConfigmap
            ? {
                auditNatsCa: o.auditNatsCaSecret
                  ? { kind: 'secret' as const, name: o.auditNatsCaSecret as string }
                  : { kind: 'configMap' as const, name: o.auditNatsCaConfigmap as string },
              }
            : {}),
        };
        const { yaml, report } = injectManifests(
          await readInput(o.filename),
          policies,
          config,
          o.namespace,
          maskingRules,
        );
        process.stdout.write(yaml);
        for (const r of report) {
          process.stderr.write(
            `${r.object}: ${r.injected ? `injected (${r.policies.join(', ')})` : `unchanged (${r.reason})`}\n`,
          );
        }
      } catch (err) {
        if (err instanceof InjectError || err instanceof PolicyFilesError) {
          process.stderr.write(`pgwarden inject: ${err.message}\n`);
          process.exitCode = 1;
          return;
        }
        throw err;
      }
    });
}
