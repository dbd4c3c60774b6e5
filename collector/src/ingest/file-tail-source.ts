import { open, stat } from 'node:fs/promises';
import type { AuditStore } from '../store/audit-store.js';
import { getCursor, setCursor } from '../store/queries.js';
import type { IngestQueue } from './ingest-queue.js';

/**
 * Fallback ingest without NATS: follows a JSON-lines file the sidecar writes (`--audit file:PATH`). The byte
 * offset of the last fully stored line is kept in the store, so a restart neither skips nor (beyond the last
 * unsaved chunk, which the store deduplicates) repeats events. A file that shrank was replaced or truncated:
 * reading starts again from its beginning.
 */
export class FileTailSource {
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly cursorName: string;

  constructor(
    private readonly store: AuditStore,
    private readonly queue: IngestQueue,
    private readonly path: string,
    private readonly pollMs = 200,
    private readonly chunkBytes = 4 * 1024 * 1024,
  ) {
    this.cursorName = `tail:${path}`;
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    let offset = (await getCursor(this.store.db, this.cursorName)) ?? 0;
    while (this.running) {
      try {
        const size = await stat(this.path).then(
          (s) => s.size,
          () => -1,
        );
        if (size >= 0 && size < offset) offset = 0;
        if (size > offset) {
          offset = await this.readFrom(offset, size);
          continue;
        }
      } catch {
        // Transient read errors (file rotated under us): retry on the next poll.
      }
      await new Promise((r) => setTimeout(r, this.pollMs));
    }
  }

  private async readFrom(offset: number, size: number): Promise<number> {
    const fh = await open(this.path, 'r');
    try {
      const len = Math.min(size - offset, this.chunkBytes);
      const buf = Buffer.alloc(len);
      const { bytesRead } = await fh.read(buf, 0, len, offset);
      const data = buf.subarray(0, bytesRead);
      const lastNl = data.lastIndexOf(0x0a);
      if (lastNl === -1) {
        // A line longer than a chunk, or one still being written: wait for its newline.
        if (len === this.chunkBytes) throw new Error(`line longer than ${this.chunkBytes} bytes at offset ${offset}`);
        await new Promise((r) => setTimeout(r, this.pollMs));
        return offset;
      }
      const lines = data
        .subarray(0, lastNl)
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim().length > 0);
      await Promise.all(lines.map((body) => this.queue.push({ body, source: `file:${this.path}` })));
      const next = offset + lastNl + 1;
      await setCursor(this.store.db, this.cursorName, next);
      return next;
    } finally {
      await fh.close();
    }
  }
}
