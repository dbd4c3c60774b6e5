import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, open, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Occupies every libuv worker thread with an open() of a FIFO no one writes to, so that background file operations
 * (fdatasync) wait in the queue, as they do on a loaded machine. Returns the release.
 */
export async function holdThreadPool(): Promise<() => Promise<void>> {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-hold-'));
  const fifo = join(dir, 'hold.fifo');
  execFileSync('mkfifo', [fifo]);
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const opened = Array.from(
    { length: threads },
    () => new Promise<number>((resolve, reject) => open(fifo, 'r', (err, fd) => (err ? reject(err) : resolve(fd)))),
  );
  // Give the workers a moment to pick the opens up (they block in open(2) until a writer comes).
  await new Promise((r) => setTimeout(r, 50));
  return async () => {
    const w = openSync(fifo, 'w');
    for (const fd of await Promise.all(opened)) closeSync(fd);
    closeSync(w);
    rmSync(dir, { recursive: true, force: true });
  };
}
