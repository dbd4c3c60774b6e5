import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { PolicySourceError } from './errors.js';

export interface PolicyFile {
  /** File name relative to the policy path (the base name for a single file). */
  name: string;
  text: string;
}

export interface PolicyFileSet {
  files: PolicyFile[];
  /** sha256 over names and contents: unchanged content is not re-validated or re-announced. */
  contentHash: string;
}

const POLICY_FILE = /\.(ya?ml|json)$/i;

/**
 * Reads a policy file, or every *.yaml/*.yml/*.json file directly inside a directory, in name order.
 * Names starting with "." are skipped: a mounted ConfigMap holds `..data` and `..<timestamp>` entries next to
 * symlinks named after its keys (https://kubernetes.io/docs/concepts/configuration/configmap/#mounted-configmaps-are-updated-automatically);
 * the kubelet swaps `..data` atomically to a new immutable `..<timestamp>` directory. When `..data` exists it is
 * resolved once and every file is read from that one directory, so a swap during the read cannot mix two versions.
 */
export function readPolicyFiles(path: string): PolicyFileSet {
  let files: PolicyFile[];
  try {
    if (statSync(path).isDirectory()) {
      const dir = existsSync(join(path, '..data')) ? realpathSync(join(path, '..data')) : path;
      files = readdirSync(dir)
        .filter((n) => !n.startsWith('.') && POLICY_FILE.test(n))
        .sort()
        .filter((n) => statSync(join(dir, n)).isFile())
        .map((n) => ({ name: n, text: readFileSync(join(dir, n), 'utf8') }));
    } else {
      files = [{ name: basename(path), text: readFileSync(path, 'utf8') }];
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new PolicySourceError('PGW_POLICY_SOURCE_READ', `cannot read policy ${path}: ${code}`, { cause: err });
  }
  if (files.length === 0)
    throw new PolicySourceError('PGW_POLICY_SOURCE_EMPTY', `no policy files (*.yaml, *.yml, *.json) in ${path}`);
  const h = createHash('sha256');
  for (const f of files) h.update(f.name).update('\0').update(f.text).update('\0');
  return { files, contentHash: h.digest('hex') };
}
