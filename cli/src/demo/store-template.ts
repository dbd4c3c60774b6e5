import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';

const require = createRequire(import.meta.url);

/**
 * Fills `target` with a fresh, empty PGlite data directory for the collector's store. Creating one runs initdb
 * inside the WASM build (measured ~5 s and ~840 MB here), reopening one ~0.7 s and ~300 MB: so the first demo
 * creates an empty template once under the temp dir (keyed by the PGlite version) and every demo copies it
 * (~40 MB). Concurrent demos race harmlessly: each builds its own candidate and renames it into place.
 */
export async function seedStoreDir(target: string, cacheRoot = tmpdir()): Promise<void> {
  const version = pgliteVersion();
  const template = join(cacheRoot, `pgwarden-demo-pglite-${version}`);
  if (!existsSync(join(template, 'PG_VERSION'))) {
    const candidate = mkdtempSync(join(cacheRoot, 'pgwarden-demo-pglite-new-'));
    try {
      const db = new PGlite(candidate);
      await db.waitReady;
      await db.close();
      renameSync(candidate, template);
    } catch (err) {
      rmSync(candidate, { recursive: true, force: true });
      // Another demo put its template in place first (rename onto a non-empty directory fails): use that one.
      if (!existsSync(join(template, 'PG_VERSION'))) throw err;
    }
  }
  cpSync(template, target, { recursive: true });
}

/** The installed PGlite's version (its package.json is not in its `exports`, so it is found next to its entry). */
function pgliteVersion(): string {
  let dir = dirname(require.resolve('@electric-sql/pglite'));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
  return pkg.name === '@electric-sql/pglite' && pkg.version ? pkg.version : 'unknown';
}
