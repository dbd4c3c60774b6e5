import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Test support (not shipped through index.ts): an ext4 filesystem whose fdatasync really fails, as on a thin-
 * provisioned volume that runs out of space. It sits on a loop device whose backing file is sparse (64 MiB) on a
 * tmpfs of 24 MiB: once fill() has used up the tmpfs, write(2) to the ext4 file still succeeds (page cache), and
 * the writeback of its new blocks fails in the loop driver, so fdatasync returns ENOSPC/EIO ("Buffer I/O error on
 * device loopN" in the kernel log). Root only (mount, losetup), as the sessions and CI here run.
 */
export interface FailingDisk {
  /** A directory on the ext4 filesystem. */
  dir: string;
  /** Uses up the space under the loop device: writeback of blocks not yet backed fails from now on. */
  fill(): void;
  /** Gives back the space fill() took: writeback succeeds again. */
  free(): void;
  /**
   * Unmounts and mounts the filesystem again (nothing may hold a file open on it): its page cache is gone, so reads
   * show what the device kept, as after a crash of the node. Pages whose writeback failed are lost here. Gives the
   * space fill() took back, as the mount needs to write.
   */
  remount(): void;
  close(): void;
}

export function mountFailingDisk(): FailingDisk {
  const base = mkdtempSync(join(tmpdir(), 'pgwarden-failing-disk-'));
  const backing = join(base, 'backing');
  const dir = join(base, 'ext4');
  mkdirSync(backing);
  mkdirSync(dir);
  const undo: (() => void)[] = [() => rmSync(base, { recursive: true, force: true })];
  const close = () => {
    for (const u of undo.splice(0).reverse()) {
      try {
        u();
      } catch {}
    }
  };
  let loop = '';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'tmpfs', backing]);
    undo.push(() => execFileSync('umount', ['-l', backing]));
    const image = join(backing, 'disk.img');
    const fd = openSync(image, 'w');
    ftruncateSync(fd, 64 * 1024 * 1024);
    closeSync(fd);
    loop = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim();
    const device = loop;
    undo.push(() => execFileSync('losetup', ['-d', device]));
    // Inode tables and journal written now, not lazily after the fill (their writes would fail instead).
    execFileSync('mkfs.ext4', ['-q', '-E', 'lazy_itable_init=0,lazy_journal_init=0', loop]);
    execFileSync('mount', [loop, dir]);
    undo.push(() => execFileSync('umount', ['-l', dir]));
  } catch (err) {
    close();
    throw err;
  }
  return {
    dir,
    fill() {
      const fd = openSync(join(backing, 'fill'), 'w');
      const chunk = Buffer.alloc(1024 * 1024, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        closeSync(fd);
      }
    },
    free() {
      rmSync(join(backing, 'fill'), { force: true });
    },
    remount() {
      // Unmounted while full, as a crashed node leaves its device: what failed to reach it stays lost. The space is
      // given back before mounting again: a read-write mount writes the superblock (and replays the journal), which a
      // full backing refused now and then ("can't read superblock").
      execFileSync('umount', [dir]);
      rmSync(join(backing, 'fill'), { force: true });
      execFileSync('mount', [loop, dir]);
    },
    close,
  };
}
