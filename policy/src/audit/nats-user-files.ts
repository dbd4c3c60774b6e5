import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A NATS user/password pair kept as the files `username` and `password` in a directory (a mounted Secret). The
 * files are read at every (re)connect, so a rotated Secret applies without a restart; a trailing newline (from
 * `kubectl create secret --from-file`) is not part of the value. Both the sidecar's audit sink and the collector
 * use it; the values never reach logs or errors.
 */
export interface NatsUserFiles {
  user: () => string;
  pass: () => string;
}

export function natsUserFiles(dir: string): NatsUserFiles {
  const read = (name: string) => {
    let text: string;
    try {
      text = readFileSync(join(dir, name), 'utf8');
    } catch (err) {
      throw new Error(`cannot read NATS ${name} from ${dir}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    const value = text.replace(/\r?\n$/, '');
    if (!value) throw new Error(`NATS ${name} in ${dir} is empty`);
    return value;
  };
  // Fail at start-up on a missing or empty file, not at the first connect attempt deep in a retry loop.
  read('username');
  read('password');
  return { user: () => read('username'), pass: () => read('password') };
}
