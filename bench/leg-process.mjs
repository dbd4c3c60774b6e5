// Starts the process behind each benchmark leg (bare pipe or sidecar) and stops it again.
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SIDECAR_NODE_ARGS } from '@pgwarden/operator';
import { freePort, waitForPort } from './net.mjs';

const REPO = fileURLToPath(new URL('..', import.meta.url));
// PGWARDEN_BIN benchmarks another pgwarden launcher (e.g. an installed one) instead of this checkout's.
const PGWARDEN = process.env.PGWARDEN_BIN ?? join(REPO, 'bin', 'pgwarden');

/**
 * Returns {name, host, port, pid?, auditFile?, stop()} for a leg. `pg` is the bench cluster,
 * `role` the {user, password} the sidecar logs in with, `workDir` a private temp dir, `nats` the bench's
 * nats-server ({url}) for legs with audit: 'nats'.
 */
/** A fresh Ed25519 private key (PEM, mode 0600) for a leg that signs its audit chains. */
function signingKey(leg, workDir) {
  const file = join(workDir, `${leg.name}-signing.key`);
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  return file;
}

/** A credentials directory (`username`, `password`) for a leg that logs in upstream as `role`. */
function credentialsDir(leg, role, workDir) {
  const dir = join(workDir, `${leg.name}-credentials`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'username'), role.user, { mode: 0o600 });
  writeFileSync(join(dir, 'password'), role.password, { mode: 0o600 });
  return dir;
}

/**
 * Compiles bench/native-pipe.c into `workDir`; returns the binary, or a reason when there is no C compiler (the leg
 * is then left out: it is a reference, not what is measured).
 */
function buildNativePipe(workDir) {
  const out = join(workDir, 'native-pipe');
  const cc = process.env.CC ?? 'cc';
  const r = spawnSync(cc, ['-O2', '-o', out, join(REPO, 'bench', 'native-pipe.c')], { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    return {
      reason: `${cc} could not build bench/native-pipe.c (apt-get install gcc): ${r.error?.message ?? r.stderr.trim()}`,
    };
  return { binary: out };
}

/** Returns the started leg, or {skipped: reason} for an optional leg this machine cannot run. */
export async function startLeg(leg, pg, role, workDir, nats) {
  if (leg.kind === 'direct') return { name: leg.name, host: pg.host, port: pg.port, stop: async () => {} };
  const port = await freePort();
  let argv;
  let auditFile;
  let command = process.execPath;
  if (leg.kind === 'native') {
    const built = buildNativePipe(workDir);
    if (!built.binary) return { name: leg.name, skipped: built.reason };
    command = built.binary;
    argv = ['--listen', `127.0.0.1:${port}`, '--upstream', `${pg.host}:${pg.port}`];
  } else if (leg.kind === 'pipe') {
    argv = [
      join(REPO, 'bench', 'bare-pipe.mjs'),
      '--listen',
      `127.0.0.1:${port}`,
      '--upstream',
      `${pg.host}:${pg.port}`,
    ];
  } else if (leg.kind === 'proxy') {
    if (!existsSync(join(REPO, 'sidecar', 'dist', 'index.js')))
      throw new Error('the sidecar is not built: run `make build` first');
    argv = [
      join(REPO, 'bench', 'proxy-no-audit.mjs'),
      '--listen',
      `127.0.0.1:${port}`,
      '--upstream',
      `${pg.host}:${pg.port}/${pg.database}`,
      '--credentials-dir',
      credentialsDir(leg, role, workDir),
    ];
  } else if (leg.kind === 'sidecar') {
    if (!existsSync(join(REPO, 'cli', 'dist', 'main.js')))
      throw new Error('pgwarden is not built: run `make build` first');
    const credentials = credentialsDir(leg, role, workDir);
    let audit;
    if (leg.audit === 'nats') {
      if (!nats) throw new Error(`leg ${leg.name} needs the bench nats-server`);
      audit = ['--audit', nats.url, '--spool-dir', join(workDir, `${leg.name}-spool`)];
    } else {
      auditFile = join(workDir, `${leg.name}-audit.jsonl`);
      audit = ['--audit', `file:${auditFile}`];
    }
    argv = [
      PGWARDEN,
      'sidecar',
      '--listen',
      `127.0.0.1:${port}`,
      '--upstream',
      `postgres://${pg.host}:${pg.port}/${pg.database}?sslmode=${leg.upstreamSslmode ?? 'disable'}`,
      '--credentials-dir',
      credentials,
      ...audit,
      // Port 0: the bench reads nothing from it, and a port picked ahead (freePort) could be taken by another
      // process before the sidecar binds it, after its proxy port already answered: the leg then died mid-bench.
      '--http',
      '127.0.0.1:0',
      ...(leg.signed ? ['--audit-signing-key', signingKey(leg, workDir)] : []),
      ...(leg.sidecarArgs ?? []),
    ];
  } else {
    throw new Error(`unknown leg kind ${leg.kind}`);
  }
  // BENCH_NODE_ARGS: extra node flags for the leg processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (written
  // when the leg exits after SIGTERM); NODE_OPTIONS refuses --cpu-prof.
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  // Sidecar legs (and the sidecar's proxy without audit) run with the V8 settings the operator injects on the container's command line (SIDECAR_NODE_ARGS
  // in operator/src/webhook/sidecar-container.ts; measured there). BENCH_SIDECAR_NODE_ARGS='' measures without them.
  const sidecarNodeArgs =
    leg.kind !== 'sidecar' && leg.kind !== 'proxy'
      ? []
      : process.env.BENCH_SIDECAR_NODE_ARGS !== undefined
        ? process.env.BENCH_SIDECAR_NODE_ARGS.split(' ').filter(Boolean)
        : SIDECAR_NODE_ARGS;
  const child = spawn(command, command === process.execPath ? [...sidecarNodeArgs, ...nodeArgs, ...argv] : argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (d) => {
    log = (log + d).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = false;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  exit.then(() => {
    exited = true;
  });
  try {
    // Every leg starts at once (bench/run.mjs): on a loaded two-core machine one may take well over the default.
    await waitForPort(port, { alive: () => !exited, timeoutMs: 60_000 });
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`leg ${leg.name} did not start: ${err.message}\n${log}`);
  }
  return {
    name: leg.name,
    host: '127.0.0.1',
    port,
    pid: child.pid,
    auditFile,
    auditNats: leg.audit === 'nats',
    signed: Boolean(leg.signed),
    log: () => log,
    /** Set once the leg's process has ended: a leg that died mid-bench is reported with its last output. */
    get exited() {
      return exited;
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    },
  };
}
