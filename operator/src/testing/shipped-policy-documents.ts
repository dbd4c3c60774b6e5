import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

const repo = (p: string) => fileURLToPath(new URL(`../../../${p}`, import.meta.url));

/**
 * Every DatabaseAccessPolicy and MaskingRule the repository ships for users to apply (examples/ and the kind e2e's
 * manifest), with the file each came from: the CRD tests check that a cluster accepts all of them.
 */
export function shippedPolicyDocuments(): { file: string; object: any }[] {
  const files = [...readdirSync(repo('examples')).map((f) => `examples/${f}`), 'e2e/manifests/policy.yaml'].filter(
    (f) => /\.ya?ml$/.test(f),
  );
  const out: { file: string; object: any }[] = [];
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(repo(file), 'utf8'))) {
      const object: any = doc.toJS();
      if (object?.kind === 'DatabaseAccessPolicy' || object?.kind === 'MaskingRule') out.push({ file, object });
    }
  }
  return out;
}
