import { createHash } from 'node:crypto';
import {
  type DatabaseAccessPolicy,
  type MaskingRule,
  PolicyError,
  type PolicyIssue,
  parsePolicyDocuments,
  parseRenderedPolicy,
  type RenderedPolicy,
  renderPolicyDocuments,
} from '@pgwarden/policy';
import type { CompiledPolicy } from './policy-source.js';
import type { PolicyFile } from './read-policy-files.js';

function isRendered(text: string): boolean {
  const t = text.trimStart();
  if (!t.startsWith('{')) return false;
  try {
    return (JSON.parse(t) as { kind?: unknown }).kind === 'RenderedPolicy';
  } catch {
    return false;
  }
}

/**
 * Turns policy files into validated RenderedPolicy objects: `kubectl apply`-style YAML (policies and masking rules
 * may sit in different files of one directory) or the operator's rendered JSON. Any invalid document rejects the
 * whole set, so a half-valid directory never becomes a policy.
 */
export function compilePolicyFiles(files: PolicyFile[]): CompiledPolicy<RenderedPolicy[]> {
  const rendered: RenderedPolicy[] = [];
  const policies: DatabaseAccessPolicy[] = [];
  const maskingRules: MaskingRule[] = [];
  const issues: PolicyIssue[] = [];
  let code: PolicyError['code'] = 'PGW_POLICY_INVALID';
  for (const f of files) {
    if (isRendered(f.text)) {
      try {
        rendered.push(parseRenderedPolicy(f.text));
      } catch (err) {
        const e = err as PolicyError;
        if (issues.length === 0 && e instanceof PolicyError) code = e.code;
        issues.push(
          ...(e.issues?.length ? e.issues : [{ path: '', message: e.message, severity: 'error' as const }]).map(
            (i) => ({ ...i, object: `${f.name}${i.object ? ` ${i.object}` : ''}` }),
          ),
        );
      }
      continue;
    }
    const docs = parsePolicyDocuments(f.text);
    issues.push(
      ...docs.errors
        .filter((i) => i.severity === 'error')
        .map((i) => ({ ...i, object: `${f.name}${i.object ? ` ${i.object}` : ''}` })),
    );
    policies.push(...docs.policies);
    maskingRules.push(...docs.maskingRules);
  }
  if (issues.length) {
    const first = issues[0];
    throw new PolicyError(
      code,
      `policy rejected: ${first.object ? `${first.object}: ` : ''}${first.path || '/'}: ${first.message}`,
      { issues },
    );
  }
  rendered.push(...renderPolicyDocuments({ policies, maskingRules }));
  if (rendered.length === 0)
    throw new PolicyError('PGW_POLICY_INVALID', 'policy rejected: no DatabaseAccessPolicy found');
  const seen = new Set<string>();
  for (const r of rendered) {
    const key = `${r.policy.namespace ?? ''}/${r.policy.name}`;
    if (seen.has(key))
      throw new PolicyError('PGW_POLICY_INVALID', `policy rejected: DatabaseAccessPolicy ${key} is defined twice`);
    seen.add(key);
  }
  const hash =
    rendered.length === 1
      ? rendered[0].hash
      : `sha256:${createHash('sha256')
          .update(rendered.map((r) => r.hash).join('\n'))
          .digest('hex')}`;
  return { value: rendered, hash, names: rendered.map((r) => r.policy.name) };
}
