/**
 * `pgwarden inject`: the webhook's mutation applied offline to manifests, like `linkerd inject`. Pod templates of
 * Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, and bare Pods, go through the same
 * mutatePod as admission; a refusal is an error naming the object.
 */
import type { DatabaseAccessPolicy, MaskingRule } from '@pgwarden/policy';
import { parseAllDocuments, stringify } from 'yaml';
import { applyJsonPatch } from '../core/json-patch.js';
import { InjectError } from '../errors.js';
import { mutatePod } from '../webhook/mutate-pod.js';
import type { SidecarConfig } from '../webhook/sidecar-config.js';

export { InjectError };

export interface InjectReport {
  object: string;
  policies: string[];
  injected: boolean;
  reason?: string;
}

const TEMPLATE_PATHS: Record<string, string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
  Pod: [],
};

export function injectObject(
  obj: any,
  policies: readonly DatabaseAccessPolicy[],
  config: SidecarConfig,
  defaultNamespace: string,
  report: InjectReport[],
  maskingRules: readonly MaskingRule[] = [],
): any {
  if (obj?.kind === 'List' && Array.isArray(obj.items)) {
    return {
      ...obj,
      items: obj.items.map((i: any) => injectObject(i, policies, config, defaultNamespace, report, maskingRules)),
    };
  }
  const path = TEMPLATE_PATHS[obj?.kind];
  if (!path || !obj.apiVersion) return obj;
  const namespace = obj.metadata?.namespace ?? defaultNamespace;
  const name = `${obj.kind}/${namespace}/${obj.metadata?.name ?? '?'}`;
  let template: any = obj;
  for (const k of path) template = template?.[k];
  if (!template?.spec) return obj;
  const pod = { metadata: { ...(template.metadata ?? {}), namespace }, spec: template.spec };
  const res = mutatePod(pod, policies, config, namespace, maskingRules);
  if ('denied' in res) throw new InjectError(`${name}: ${res.denied}`);
  report.push({ object: name, policies: res.policies, injected: res.patch.length > 0, reason: res.skipped });
  if (res.patch.length === 0) return obj;
  const mutated = applyJsonPatch(pod, res.patch);
  if (!template.metadata?.namespace) delete (mutated.metadata as any).namespace;
  const out = structuredClone(obj);
  if (path.length === 0)
    return { ...out, metadata: { ...mutated.metadata, namespace: obj.metadata?.namespace }, spec: mutated.spec };
  let parent = out;
  for (const k of path.slice(0, -1)) parent = parent[k];
  parent[path[path.length - 1]] = { ...template, metadata: mutated.metadata, spec: mutated.spec };
  return out;
}

/** Multi-document YAML in, multi-document YAML out (documents that hold no pods pass through unchanged). */
export function injectManifests(
  yamlText: string,
  policies: readonly DatabaseAccessPolicy[],
  config: SidecarConfig,
  defaultNamespace = 'default',
  maskingRules: readonly MaskingRule[] = [],
): { yaml: string; report: InjectReport[] } {
  const report: InjectReport[] = [];
  const docs = parseAllDocuments(yamlText);
  const list = Array.isArray(docs) ? docs : [docs];
  const out: string[] = [];
  for (const doc of list) {
    if (doc.errors.length) throw new InjectError(`YAML: ${doc.errors[0].message.split('\n')[0]}`);
    const value = doc.toJS();
    if (value === null || value === undefined) continue;
    out.push(
      stringify(injectObject(value, policies, config, defaultNamespace, report, maskingRules), { lineWidth: 0 }),
    );
  }
  return { yaml: out.join('---\n'), report };
}
