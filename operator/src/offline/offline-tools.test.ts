import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseRenderedPolicy, renderPolicy } from '@pgwarden/policy';
import { Deployment } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { Pod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { buildRenderedConfigMap } from '../controller/rendered-configmap.js';
import { ANNOTATIONS, DEFAULT_SIDECAR_CONFIG } from '../webhook/sidecar-config.js';
import { InjectError, injectManifests } from './inject-manifests.js';
import { readPolicyFiles } from './policy-files.js';
import { renderConfigMaps } from './render-configmaps.js';

const dir = mkdtempSync(join(tmpdir(), 'pgw-policies-'));
writeFileSync(
  join(dir, 'policy.yaml'),
  `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: analytics-agent, namespace: agents}
spec:
  podSelector: {matchLabels: {app: analytics-agent}}
  database: {host: orders-db.data.svc, name: orders, credentialsSecretRef: {name: orders-db-agent}}
  rules: [{name: read, action: allow, statements: [select]}]
`,
);
writeFileSync(
  join(dir, 'masking.yml'),
  `apiVersion: pgwarden.dev/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: agents}
spec: {policies: [analytics-agent], detectors: [email]}
`,
);

const manifests = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: agent, namespace: agents}
spec:
  selector: {matchLabels: {app: analytics-agent}}
  template:
    metadata: {labels: {app: analytics-agent}}
    spec: {containers: [{name: agent, image: python:3.12}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: agents}
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: analytics-agent}}
        spec: {restartPolicy: Never, containers: [{name: job, image: busybox}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: other, namespace: agents}
spec:
  template:
    metadata: {labels: {app: web}}
    spec: {restartPolicy: Never, containers: [{name: job, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: agents, labels: {app: analytics-agent}}
spec: {containers: [{name: agent, image: python:3.12}]}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: agents}
spec: {ports: [{port: 80}]}
`;

describe('pgwarden inject / render (offline, same code paths as webhook and controller)', () => {
  it('injects pod templates of every workload kind and leaves other objects alone', async () => {
    const { policies } = await readPolicyFiles(dir);
    const { yaml, report } = injectManifests(manifests, policies, DEFAULT_SIDECAR_CONFIG);
    const docs = parseAllDocuments(yaml).map((d: any) => d.toJS());
    expect(docs.map((d) => d.kind)).toEqual(['Deployment', 'CronJob', 'Job', 'Pod', 'Service']);
    const [deploy, cron, job, pod, svc] = docs;
    expect(deploy.spec.template.spec.initContainers[0].name).toBe('pgwarden-analytics-agent');
    expect(deploy.spec.template.metadata.annotations[ANNOTATIONS.status]).toBe('injected');
    expect(deploy.spec.template.metadata.namespace).toBeUndefined();
    expect(cron.spec.jobTemplate.spec.template.spec.initContainers[0].restartPolicy).toBe('Always');
    expect(job.spec.template.spec.initContainers).toBeUndefined();
    expect(pod.spec.initContainers).toHaveLength(1);
    expect(svc).toEqual({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 's', namespace: 'agents' },
      spec: { ports: [{ port: 80 }] },
    });
    expect(() => new Deployment(deploy).validate()).not.toThrow();
    expect(() => new CronJob(cron).validate()).not.toThrow();
    expect(() => new Job(job).validate()).not.toThrow();
    expect(() => new Pod(pod).validate()).not.toThrow();
    expect(report.map((r) => r.injected)).toEqual([true, true, false, true]);
    // Idempotent like the webhook: injecting the output again changes nothing.
    expect(injectManifests(yaml, policies, DEFAULT_SIDECAR_CONFIG).yaml).toBe(yaml);
  });

  it('refuses unsafe workloads with the webhook message', async () => {
    const { policies } = await readPolicyFiles(dir);
    const bad = manifests.replace(
      'spec: {containers: [{name: agent, image: python:3.12}]}\n---\napiVersion: batch',
      'spec: {hostNetwork: true, containers: [{name: agent, image: python:3.12}]}\n---\napiVersion: batch',
    );
    expect(() => injectManifests(bad, policies, DEFAULT_SIDECAR_CONFIG)).toThrow(InjectError);
    expect(() => injectManifests(bad, policies, DEFAULT_SIDECAR_CONFIG)).toThrow(
      /Deployment\/agents\/agent: .*hostNetwork/,
    );
  });

  it('render prints the ConfigMaps the controller would write, byte for byte', async () => {
    const docs = await readPolicyFiles(dir);
    const [cm] = renderConfigMaps(docs);
    const rendered = parseRenderedPolicy(cm.data['policy.json']);
    expect(rendered.maskingRules.map((r) => r.name)).toEqual(['pii']);
    const controllerCm = buildRenderedConfigMap(
      { name: 'analytics-agent', namespace: 'agents' },
      renderPolicy(docs.policies[0], docs.maskingRules),
    );
    expect(cm).toEqual(controllerCm);
    // Deterministic: masking rules in another order give the same bytes.
    const reordered = renderConfigMaps({ policies: docs.policies, maskingRules: [...docs.maskingRules].reverse() });
    expect(reordered[0].data['policy.json']).toBe(cm.data['policy.json']);
    // Over the 1 MiB a ConfigMap holds: an error rather than a manifest the API server would refuse.
    const huge = structuredClone(docs.policies[0]);
    huge.spec.rules = Array.from({ length: 40 }, (_, i) => ({
      name: `r${i}`,
      action: 'allow' as const,
      statements: ['select' as const],
      tables: Array.from({ length: 128 }, (_, j) => `s${i}.t${j}_${'x'.repeat(240)}`),
    }));
    expect(() => renderConfigMaps({ policies: [huge], maskingRules: docs.maskingRules })).toThrow(
      /agents\/analytics-agent: the rendered policy is \d+ bytes, over the 1048576 bytes \(1 MiB\) a ConfigMap holds/,
    );
  });
});

describe('the e2e scenario manifests', () => {
  it('inject cleanly with the e2e policy into a valid Deployment', async () => {
    const e2e = (f: string) => fileURLToPath(new URL(`../../../e2e/manifests/${f}`, import.meta.url));
    const { policies } = await readPolicyFiles(e2e('policy.yaml'));
    const { yaml, report } = injectManifests(readFileSync(e2e('agent.yaml'), 'utf8'), policies, DEFAULT_SIDECAR_CONFIG);
    expect(report).toEqual([
      { object: 'Deployment/agents/analytics-agent', policies: ['analytics-agent'], injected: true, reason: undefined },
    ]);
    const [deploy] = parseAllDocuments(yaml).map((d: any) => d.toJS());
    expect(() => new Deployment(deploy).validate()).not.toThrow();
  });
});
