import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Credentials } from './upstream/connect.js';
import { UpstreamError } from './upstream/errors.js';

/** Where the upstream credentials come from: given directly, or files `username` and `password` in a directory. */
export type CredentialsSource = Credentials | { dir: string };

/**
 * Returns the current credentials. A directory (a mounted Kubernetes Secret) is re-read when either file's mtime
 * changes, checked on every upstream connect: Secret updates arrive as an atomic symlink swap, which changes the
 * mtime of the path. Errors name the file, never its content.
 */
export function credentialsProvider(source: CredentialsSource): () => Credentials {
  if (!('dir' in source)) {
    const fixed = { username: source.username, password: source.password };
    return () => fixed;
  }
  const userFile = join(source.dir, 'username');
  const passFile = join(source.dir, 'password');
  let stamp = '';
  let current: Credentials | null = null;
  return () => {
    let next: string;
    try {
      next = `${statSync(userFile).mtimeMs}:${statSync(passFile).mtimeMs}`;
    } catch (err) {
      throw new UpstreamError(
        'PGW_UPSTREAM_CREDENTIALS',
        `credentials directory ${source.dir} must hold files "username" and "password"`,
        { cause: err },
      );
    }
    if (current && next === stamp) return current;
    // A trailing newline is how `echo secret > password` and most Secret generators write the value.
    const username = readFileSync(userFile, 'utf8').replace(/\r?\n$/, '');
    const password = readFileSync(passFile, 'utf8').replace(/\r?\n$/, '');
    if (!username) throw new UpstreamError('PGW_UPSTREAM_CREDENTIALS', `credentials file ${userFile} is empty`);
    current = { username, password };
    stamp = next;
    return current;
  };
}
