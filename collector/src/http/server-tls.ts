import { readFileSync, statSync } from 'node:fs';
import type { SecureContextOptions } from 'node:tls';
import { CollectorError } from '../errors.js';

/** The API's certificate and key files (PEM), e.g. a mounted kubernetes.io/tls Secret. */
export interface ServerTlsFiles {
  certFile: string;
  keyFile: string;
  /** How often the files are checked for a change (default 10 s). */
  reloadMs?: number;
}

/** Reads both files; a missing or unreadable one is a start-up error naming the file (never its content). */
export function readServerTls(files: ServerTlsFiles): SecureContextOptions {
  const read = (what: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new CollectorError(
        'COLLECTOR_BAD_CONFIG',
        `TLS ${what} ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
  };
  return { cert: read('certificate', files.certFile), key: read('key', files.keyFile) };
}

/**
 * Watches the files (polling: a rotated Secret swaps a symlink, which fs.watch misses) and hands a fresh context to
 * `apply` when either changes, so a renewed certificate is served without a restart. A half-written pair (the
 * key does not match the certificate) is skipped; the next change retries. Returns the stop function.
 */
export function followServerTls(
  files: ServerTlsFiles,
  apply: (ctx: SecureContextOptions) => void,
  onError: (message: string) => void,
): () => void {
  const version = () => {
    try {
      return [files.certFile, files.keyFile]
        .map((f) => {
          const s = statSync(f);
          return `${s.mtimeMs}:${s.size}:${s.ino}`;
        })
        .join('|');
    } catch {
      return '';
    }
  };
  let seen = version();
  const timer = setInterval(() => {
    const now = version();
    if (now === seen || now === '') return;
    try {
      apply(readServerTls(files));
      seen = now;
    } catch (err) {
      onError((err as Error).message.split('\n')[0]);
    }
  }, files.reloadMs ?? 10_000);
  timer.unref();
  return () => clearInterval(timer);
}
