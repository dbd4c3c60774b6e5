import { createReadStream, createWriteStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { AuditEvent } from '../event.js';
import type { Exporter } from './export-runner.js';
import { toOcsf } from './ocsf-mapping.js';

export interface JsonlFileOptions {
  name?: string;
  /** The active file; rotated files sit next to it as `<name>-<UTC time>.jsonl[.gz]`. */
  path: string;
  /** Rotate once the active file reaches this size (default 100 MiB). */
  maxBytes?: number;
  gzip?: boolean;
  format?: 'pgwarden' | 'ocsf';
}

/**
 * JSON lines, one event per line, fsynced before a batch counts as delivered. Rotation renames the active file
 * (atomic within a directory) and then compresses the renamed copy, so a crash mid-gzip leaves a complete
 * uncompressed file rather than a truncated archive.
 */
export function jsonlFileExporter(o: JsonlFileOptions): Exporter {
  const maxBytes = o.maxBytes ?? 100 * 1024 * 1024;
  let fh: FileHandle | null = null;
  let size = 0;
  let rotations = 0;

  const openActive = async () => {
    await mkdir(dirname(o.path), { recursive: true });
    fh = await open(o.path, 'a');
    size = (await stat(o.path)).size;
    return fh;
  };

  const rotate = async () => {
    await fh?.close();
    fh = null;
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const base = basename(o.path).replace(/\.jsonl?$/, '');
    const rotated = join(dirname(o.path), `${base}-${stamp}-${rotations++}.jsonl`);
    await rename(o.path, rotated);
    if (o.gzip) {
      await pipeline(createReadStream(rotated), createGzip(), createWriteStream(`${rotated}.gz`));
      const gz = await open(`${rotated}.gz`, 'r');
      await gz.sync();
      await gz.close();
      await rm(rotated);
    }
  };

  return {
    name: o.name ?? 'jsonl',
    async deliver(events: readonly AuditEvent[]) {
      const handle = fh ?? (await openActive());
      const text = events.map((e) => `${JSON.stringify(o.format === 'ocsf' ? toOcsf(e) : e)}\n`).join('');
      const buf = Buffer.from(text, 'utf8');
      await handle.write(buf);
      await handle.sync();
      size += buf.length;
      if (size >= maxBytes) await rotate();
    },
    async close() {
      await fh?.close();
      fh = null;
    },
  };
}
