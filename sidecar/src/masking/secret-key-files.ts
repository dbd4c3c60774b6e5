import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isReadableKeyRef, type KeyResolver } from '@pgwarden/policy';

/**
 * Resolves a strategy's keySecretRef to `<dir>/<secret name>/<key>`, the layout of Secrets mounted as volumes
 * (https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-files-from-a-pod). Read once per
 * ref and cached; a missing file yields undefined (the masker then uses its per-process key). Never logs content.
 */
export function secretFileKeyResolver(dir: string): KeyResolver {
  const cache = new Map<string, Buffer | undefined>();
  return (ref) => {
    if (!isReadableKeyRef({ secret: ref.name, key: ref.key })) return undefined;
    const id = `${ref.name}/${ref.key}`;
    if (!cache.has(id)) {
      let key: Buffer | undefined;
      try {
        key = readFileSync(join(dir, ref.name, ref.key));
      } catch {
        key = undefined;
      }
      cache.set(id, key && key.length > 0 ? key : undefined);
    }
    return cache.get(id);
  };
}

/** `PGWARDEN_MASKING_KEYS_DIR`: where hash keys' Secrets are mounted (`<dir>/<secret>/<key>`); unset = none. */
export function keyResolverFromEnv(env: NodeJS.ProcessEnv = process.env): KeyResolver | undefined {
  const dir = env.PGWARDEN_MASKING_KEYS_DIR;
  return dir ? secretFileKeyResolver(dir) : undefined;
}
