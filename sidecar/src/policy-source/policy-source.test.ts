import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePolicyDocuments, renderPolicy, serializeRenderedPolicy } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { compilePolicyFiles } from './compile-policy-files.js';
import { createPolicySource, type PolicySource, type PolicySourceEvent } from './policy-source.js';

const policyYaml = (name: string, action = 'allow') => `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: ${name}, namespace: agents}
spec:
  database: {host: 127.0.0.1, name: app}
  rules:
    - {name: read, action: ${action}, statements: [select]}
`;
const maskingYaml = `apiVersion: pgwarden.dev/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: agents}
spec:
  policies: [analyst]
  columns: [{table: public.customers, column: email, strategy: {type: redact}}]
`;
const rendered = (name: string) => {
  const docs = parsePolicyDocuments(policyYaml(name));
  return serializeRenderedPolicy(renderPolicy(docs.policies[0], []));
};

const sources: PolicySource<unknown>[] = [];
afterEach(() => {
  for (const s of sources.splice(0)) s.close();
});

function start(path: string, registry = new Registry()) {
  const events: PolicySourceEvent[] = [];
  const source = createPolicySource({ path, compile: compilePolicyFiles, debounceMs: 50, pollMs: 0, registry });
  sources.push(source);
  source.on((e) => events.push(e));
  source.start();
  const next = (n: number, timeoutMs = 3000) =>
    new Promise<PolicySourceEvent[]>((resolve, reject) => {
      const t0 = Date.now();
      const tick = () => {
        if (events.length >= n) resolve(events.slice(0, n));
        else if (Date.now() - t0 > timeoutMs)
          reject(new Error(`waited for ${n} events, got ${JSON.stringify(events)}`));
        else setTimeout(tick, 10);
      };
      tick();
    });
  const failures = async () =>
    (await registry.getSingleMetric('pgwarden_policy_reload_failures_total')!.get()).values[0]?.value ?? 0;
  return { source, events, next, failures };
}

/** Replaces a file the way editors and config tools do: write aside, then rename over. */
function replace(path: string, text: string) {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

const tmp = () => mkdtempSync(join(tmpdir(), 'pgwarden-policy-'));

describe('policy source', () => {
  it('loads a YAML file, reloads on rename, and keeps the last good policy when a bad file arrives', async () => {
    const dir = tmp();
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyYaml('analyst'));
    const { source, next, failures } = start(file);
    expect(source.ready()).toBe(true);
    const first = source.current()!;
    expect(first.names).toEqual(['analyst']);
    expect(first.hash).toMatch(/^sha256:[0-9a-f]{64}$/);

    replace(file, policyYaml('analyst', 'deny'));
    const [, loaded] = await next(2);
    expect(loaded).toMatchObject({ type: 'policy.loaded', names: ['analyst'], version: 2 });
    expect(source.current()!.hash).not.toBe(first.hash);
    const good = source.current()!;

    replace(file, policyYaml('analyst', 'explode'));
    const [, , rejected] = await next(3);
    expect(rejected).toMatchObject({
      type: 'policy.rejected',
      code: 'PGW_POLICY_INVALID',
      kept: { names: ['analyst'], hash: good.hash },
    });
    expect((rejected as { message: string }).message).toContain('/spec/rules/0/action');
    expect(source.current()).toBe(good);
    expect(source.ready()).toBe(true);
    expect(await failures()).toBe(1);
  });

  it('is not ready until a first valid policy loads; a file that is unchanged is not re-announced', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(file, 'kind: [unclosed');
    const { source, events, next, failures } = start(file);
    expect(source.ready()).toBe(false);
    expect(events[0]).toMatchObject({ type: 'policy.rejected', files: ['p.yaml'] });
    expect(events[0]).not.toHaveProperty('kept');
    expect(source.reload()).toBeUndefined();
    expect(await failures()).toBe(1);
    replace(file, policyYaml('analyst'));
    await next(2);
    expect(source.ready()).toBe(true);
    expect(source.reload()).toBeUndefined();
  });

  it('loads a directory of YAML files as one set (a masking rule in its own file) and debounces bursts', async () => {
    const dir = tmp();
    writeFileSync(join(dir, '10-policy.yaml'), policyYaml('analyst'));
    writeFileSync(join(dir, '20-masking.yml'), maskingYaml);
    writeFileSync(join(dir, 'README.md'), 'not a policy');
    const { source, events, next } = start(dir);
    const value = source.current()!.value as { maskingRules: { name: string }[] }[];
    expect(value[0].maskingRules.map((m) => m.name)).toEqual(['pii']);
    expect(source.current()!.files).toEqual(['10-policy.yaml', '20-masking.yml']);
    for (let i = 0; i < 10; i++)
      writeFileSync(join(dir, '10-policy.yaml'), policyYaml('analyst', i % 2 ? 'deny' : 'review'));
    await next(2);
    await new Promise((r) => setTimeout(r, 300));
    expect(events).toHaveLength(2);
    expect(
      (source.current()!.value as { policy: { spec: { rules: { action: string }[] } } }[])[0].policy.spec.rules[0]
        .action,
    ).toBe('deny');
  });

  it('follows a ConfigMap ..data symlink swap of the operator’s rendered JSON, rejecting a tampered one', async () => {
    // The kubelet's layout: ..<ts>/policy.json, ..data -> ..<ts>, policy.json -> ..data/policy.json; an update
    // writes a new ..<ts2>, points ..data_tmp at it and renames ..data_tmp over ..data (atomic).
    const dir = tmp();
    const writeVersion = (ts: string, text: string) => {
      mkdirSync(join(dir, ts));
      writeFileSync(join(dir, ts, 'policy.json'), text);
      symlinkSync(ts, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    };
    writeVersion('..2026_01_01_00_00_00.1', rendered('analyst'));
    symlinkSync('..data/policy.json', join(dir, 'policy.json'));
    const { source, next } = start(dir);
    expect(source.current()!.names).toEqual(['analyst']);
    const h1 = source.current()!.hash;
    expect(h1).toBe(JSON.parse(rendered('analyst')).hash);

    writeVersion('..2026_01_01_00_01_00.2', rendered('analyst-v2'));
    rmSync(join(dir, '..2026_01_01_00_00_00.1'), { recursive: true });
    const [, loaded] = await next(2);
    expect(loaded).toMatchObject({ type: 'policy.loaded', names: ['analyst-v2'] });

    // The same mount addressed as a file (--policy /etc/pgwarden/policy.json) follows the swap as well.
    const asFile = start(join(dir, 'policy.json'));
    expect(asFile.source.current()!.names).toEqual(['analyst-v2']);
    writeVersion('..2026_01_01_00_01_30.4', rendered('analyst-v2b'));
    const [, fileLoaded] = await asFile.next(2);
    expect(fileLoaded).toMatchObject({ type: 'policy.loaded', names: ['analyst-v2b'] });
    await next(3);

    const tampered = JSON.parse(rendered('analyst-v3'));
    tampered.policy.spec.defaultAction = 'allow';
    writeVersion('..2026_01_01_00_02_00.3', JSON.stringify(tampered));
    const [, , , rejected] = await next(4);
    expect(rejected).toMatchObject({ type: 'policy.rejected', code: 'PGW_RENDERED_HASH_MISMATCH' });
    expect(source.current()!.names).toEqual(['analyst-v2b']);
  });

  it('rejects duplicate policies and sets without any DatabaseAccessPolicy', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'a.yaml'), policyYaml('analyst'));
    writeFileSync(join(dir, 'b.yaml'), policyYaml('analyst'));
    const { events } = start(dir);
    expect(events[0]).toMatchObject({ type: 'policy.rejected', message: expect.stringContaining('defined twice') });
    const only = tmp();
    writeFileSync(join(only, 'm.yaml'), maskingYaml);
    expect(start(only).events[0]).toMatchObject({
      type: 'policy.rejected',
      message: expect.stringContaining('no DatabaseAccessPolicy'),
    });
    expect(start(join(only, 'missing.yaml')).events[0]).toMatchObject({
      type: 'policy.rejected',
      code: 'PGW_POLICY_SOURCE_READ',
    });
  });
});
