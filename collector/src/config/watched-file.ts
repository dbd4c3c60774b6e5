import { EventEmitter } from 'node:events';
import { readFileSync, statSync } from 'node:fs';
import { CollectorError } from '../errors.js';

export interface WatchedFileEvents<T> {
  loaded: [value: T];
  /** The file changed into something unreadable or invalid; `current()` reports it until the file is fixed. */
  invalid: [message: string];
}

/**
 * A configuration file the collector follows without a restart: re-read, when asked for, whenever its modification
 * time, size or inode changed (a rotated Kubernetes Secret swaps a symlink, which fs.watch misses). A stat per use
 * costs microseconds, so there is no timer. What a broken replacement means is the owner's decision: `current()`
 * returns the last good value together with the error.
 */
export class WatchedFile<T> extends EventEmitter<WatchedFileEvents<T>> {
  private value: T;
  private version: string;
  private error: string | undefined;

  /**
   * Reads and parses the file once; throws on a missing or invalid file, so a bad flag fails at start-up. `what`
   * names the file in messages (`readers file`); `parse` throws on invalid text, with a message naming the file.
   */
  constructor(
    readonly path: string,
    private readonly what: string,
    private readonly parse: (text: string) => T,
  ) {
    super();
    this.value = parse(this.read());
    this.version = this.stat();
  }

  /** The last value that parsed, re-read first if the file changed; `error` while the file on disk is broken. */
  current(): { value: T; error: string | undefined } {
    this.refresh();
    return { value: this.value, error: this.error };
  }

  private refresh(): void {
    let v: string;
    try {
      v = this.stat();
    } catch (err) {
      this.fail('', `${this.what} ${this.path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      return;
    }
    if (v === this.version) return;
    let text: string;
    try {
      text = this.read();
    } catch (err) {
      // Unreadable with an unchanged stat (permissions): retried at the next use.
      this.fail('', (err as Error).message);
      return;
    }
    try {
      this.value = this.parse(text);
    } catch (err) {
      // The same bytes would fail the same way: not parsed again until the file changes.
      this.fail(v, (err as Error).message);
      return;
    }
    this.version = v;
    this.error = undefined;
    this.emit('loaded', this.value);
  }

  private fail(version: string, message: string): void {
    this.version = version;
    if (this.error !== message) this.emit('invalid', message);
    this.error = message;
  }

  private stat(): string {
    const s = statSync(this.path);
    return `${s.mtimeMs}:${s.size}:${s.ino}`;
  }

  private read(): string {
    try {
      return readFileSync(this.path, 'utf8');
    } catch (err) {
      throw new CollectorError(
        'COLLECTOR_BAD_CONFIG',
        `${this.what} ${this.path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
  }
}
