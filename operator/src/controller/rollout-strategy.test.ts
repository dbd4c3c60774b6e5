import { validatePolicySpec } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { ANNOTATIONS } from '../webhook/sidecar-config.js';
import { rolloutStrategy } from './reconcile-policy.js';

const spec = { database: { host: 'db', name: 'app' } };

describe('spec.rolloutStrategy', () => {
  it('is part of the policy schema: Workload or None, nothing else', () => {
    expect(validatePolicySpec({ ...spec, rolloutStrategy: 'None' })).toEqual([]);
    expect(validatePolicySpec({ ...spec, rolloutStrategy: 'Workload' })).toEqual([]);
    expect(validatePolicySpec({ ...spec, rolloutStrategy: 'Always' }).map((i) => i.path)).toContain(
      '/spec/rolloutStrategy',
    );
  });

  it('the spec field wins over the annotation, which wins over the operator default', () => {
    const annotated = { annotations: { [ANNOTATIONS.rolloutStrategy]: 'None' } };
    expect(rolloutStrategy({ metadata: annotated, spec: { ...spec, rolloutStrategy: 'Workload' } }, 'None')).toBe(
      'Workload',
    );
    expect(rolloutStrategy({ metadata: annotated, spec }, 'Workload')).toBe('None');
    expect(rolloutStrategy({ metadata: {}, spec }, 'Workload')).toBe('Workload');
    expect(rolloutStrategy({ metadata: {}, spec: { ...spec, rolloutStrategy: 'None' } }, 'Workload')).toBe('None');
  });
});
