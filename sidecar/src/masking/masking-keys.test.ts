import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RenderedPolicy } from '@pgwarden/policy';
import { afterEach, describe, expect, it } from 'vitest';
import type { GovernanceEvent } from '../governance/governance-events.js';
import { type GovernedSidecar, startGovernedSidecar } from '../governance/start-governed-sidecar.js';
import { unreadableMaskingKeys } from './masking-keys.js';
import { secretFileKeyResolver } from './secret-key-files.js';

const hashed = (column: string, name: string, key: string) => ({
  table: 'public.customers',
  column,
  strategy: { type: 'hash', keySecretRef: { name, key } },
});

function keysDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pgw-mkeys-'));
  mkdirSync(join(dir, 'pii-key'));
  writeFileSync(join(dir, 'pii-key', 'hmac'), 'the-key');
  return dir;
}

describe('unreadableMaskingKeys', () => {
  const policy = {
    maskingRules: [
      { name: 'pii', spec: { columns: [hashed('name', 'pii-key', 'hmac'), hashed('email', 'pii-key', 'gone')] } },
      { name: 'plain', spec: { columns: [{ table: '*', column: 'ssn', strategy: { type: 'redact' } }] } },
    ],
  } as unknown as Pick<RenderedPolicy, 'maskingRules'>;

  it('names each keySecretRef the sidecar cannot read, and why', () => {
    expect(unreadableMaskingKeys(policy, secretFileKeyResolver(keysDir()))).toEqual([
      expect.objectContaining({
        rule: 'pii',
        secret: 'pii-key',
        key: 'gone',
        reason: expect.stringMatching(/no such file/),
      }),
    ]);
    expect(unreadableMaskingKeys(policy, undefined)).toEqual([
      { rule: 'pii', secret: 'pii-key', key: 'hmac', reason: 'PGWARDEN_MASKING_KEYS_DIR is not set' },
      { rule: 'pii', secret: 'pii-key', key: 'gone', reason: 'PGWARDEN_MASKING_KEYS_DIR is not set' },
    ]);
  });
});

describe('the governed sidecar at policy load', () => {
  let gs: GovernedSidecar | undefined;
  afterEach(async () => {
    await gs?.close(0);
    gs = undefined;
  });

  const policyYaml = (keys: string[]) => `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: analytics, namespace: agents}
spec:
  database: {host: 127.0.0.1, port: 1, name: app}
  rules: [{name: reads, action: allow, statements: [select]}]
---
apiVersion: pgwarden.dev/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: agents}
spec:
  policies: [analytics]
  columns:
${keys.map((k, i) => `    - {table: customers, column: c${i}, strategy: {type: hash, keySecretRef: {name: pii-key, key: ${k}}}}`).join('\n')}
`;

  it('reports a key it cannot read (event, log, metric), also after a reload, and clears it once readable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-policy-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyYaml(['hmac', 'gone']));
    const events: GovernanceEvent[] = [];
    const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
    const logger = {
      warn: (fields: Record<string, unknown>, msg: string) => warnings.push({ fields, msg }),
      info: () => {},
      error: () => {},
      debug: () => {},
    };
    gs = await startGovernedSidecar({
      policyPath: file,
      listenPort: 0,
      credentials: { username: 'u', password: 'p' },
      governance: { onEvent: (e) => events.push(e) },
      resolveMaskingKey: secretFileKeyResolver(keysDir()),
      logger: logger as never,
      http: false,
      pollMs: 0,
      control: false,
    });
    expect(events.filter((e) => e.type === 'masking.keys_unreadable')).toEqual([
      {
        type: 'masking.keys_unreadable',
        policy: 'analytics',
        keys: [expect.objectContaining({ rule: 'pii', secret: 'pii-key', key: 'gone' })],
      },
    ]);
    expect(warnings).toEqual([
      {
        fields: expect.objectContaining({ policy: 'analytics', rule: 'pii', secret: 'pii-key', key: 'gone' }),
        msg: expect.stringMatching(/MaskingRule "pii": key "gone" of Secret "pii-key" cannot be read.*per-process key/),
      },
    ]);
    // Names only: the bytes of the key that was read appear nowhere.
    expect(JSON.stringify([events, warnings])).not.toContain('the-key');
    expect(await gs.listeners[0].sidecar.metrics.registry.metrics()).toMatch(
      /pgwarden_masking_keys_unreadable\{policy="analytics"\} 1/,
    );

    // A rule edited after start (the ConfigMap hot-reloads) is checked again.
    writeFileSync(file, policyYaml(['hmac', 'gone', 'later']));
    gs.source.reload();
    expect(events.filter((e) => e.type === 'masking.keys_unreadable').at(-1)).toMatchObject({
      keys: [{ key: 'gone' }, { key: 'later' }],
    });
    writeFileSync(file, policyYaml(['hmac']));
    gs.source.reload();
    expect(await gs.listeners[0].sidecar.metrics.registry.metrics()).toMatch(
      /pgwarden_masking_keys_unreadable\{policy="analytics"\} 0/,
    );
  });
});
