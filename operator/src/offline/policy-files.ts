import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type DatabaseAccessPolicy, formatIssue, type MaskingRule, parsePolicyDocuments } from '@pgwarden/policy';
import { PolicyFilesError } from '../errors.js';

export { PolicyFilesError };

/** Reads every .yaml/.yml/.json file of a directory (or one file) as DatabaseAccessPolicy/MaskingRule documents. */
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
    const docs = parsePolicyDocuments(await readFile(file, 'utf8'));
    if (docs.errors.length) {
      throw new PolicyFilesError(`${file}: ${docs.errors.slice(0, 5).map(formatIssue).join('; ')}`);
    }
    out.policies.push(...docs.policies);
    out.maskingRules.push(...docs.maskingRules);
  }
  return out;
}
