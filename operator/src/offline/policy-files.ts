import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type DatabaseAccessPolicy, formatIssue, type MaskingRule, parsePolicyDocuments } from '@pgwarden/policy';
import { parseAllDocuments } from 'yaml';
import { PolicyFilesError } from '../errors.js';

export { PolicyFilesError };

/** Reads the pgwarden.dev documents of every .yaml/.yml/.json file of a directory (or one file) as DatabaseAccessPolicy/MaskingRule documents. */
export async function readPolicyFiles(
  path: string,
): Promise<{ policies: DatabaseAccessPolicy[]; maskingRules: MaskingRule[] }> {
  const files = (await stat(path)).isDirectory()
    ? (await readdir(path))
        .filter((f) => /\.(ya?ml|json)$/.test(f) && !f.startsWith('.'))
        .sort()
        .map((f) => join(path, f))
    : [path];
  const out = { policies: [] as DatabaseAccessPolicy[], maskingRules: [] as MaskingRule[] };
  for (const file of files) {
    // Manifest directories mix kinds (Namespaces, Secrets...): only pgwarden.dev documents are policy input.
    const stream = parseAllDocuments(await readFile(file, 'utf8'));
    for (const [index, doc] of (Array.isArray(stream) ? stream : [stream]).entries()) {
      if (doc.errors.length)
        throw new PolicyFilesError(`${file}: document ${index}: YAML: ${doc.errors[0].message.split('\n')[0]}`);
      const apiVersion = (doc.toJS() as { apiVersion?: unknown } | null)?.apiVersion;
      if (typeof apiVersion !== 'string' || !apiVersion.startsWith('pgwarden.dev/')) continue;
      const docs = parsePolicyDocuments(doc.toString());
      if (docs.errors.length) {
        throw new PolicyFilesError(
          `${file}: document ${index}: ${docs.errors.slice(0, 5).map(formatIssue).join('; ')}`,
        );
      }
      out.policies.push(...docs.policies);
      out.maskingRules.push(...docs.maskingRules);
    }
  }
  return out;
}
