import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SIDECAR_ENTRYPOINT, SIDECAR_NODE_ARGS } from './sidecar-container.js';

describe('sidecar container command', () => {
  // The webhook replaces the image's ENTRYPOINT to put V8 arguments in front of the launcher: the image it ships
  // with must keep the launcher where the command points.
  it("names the launcher of the image's own ENTRYPOINT", () => {
    const dockerfile = readFileSync(new URL('../../../e2e/Dockerfile', import.meta.url), 'utf8');
    const entrypoint = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(dockerfile);
    expect(entrypoint).not.toBeNull();
    expect(JSON.parse(entrypoint![1])).toEqual(['node', SIDECAR_ENTRYPOINT]);
  });

  it('passes only options this Node accepts on its command line', () => {
    // node exits 9 with "bad option" for an unknown one; the sidecar would then never start.
    const r = spawnSync(process.execPath, [...SIDECAR_NODE_ARGS, '-e', 'process.exit(0)'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
