// Runs pgbench and reads its summary (https://www.postgresql.org/docs/15/pgbench.html, "Typical Output").
import { spawn } from 'node:child_process';

/**
 * Runs `pgbench ARGS -T seconds` against {host, port, user, password, database}; resolves with
 * {tps, transactions, failed} or rejects with pgbench's output when it exits non-zero. With `transactions`
 * (per client) it runs `-t` instead: a fixed amount of work that cannot come out empty on a loaded machine, which is
 * what the smoke run in `make test` needs (it checks that every leg works, not how fast).
 */
export function runPgbench(target, args, seconds, transactions) {
  const argv = [
    '-n',
    ...(transactions ? ['-t', String(transactions)] : ['-T', String(seconds)]),
    '-h',
    target.host,
    '-p',
    String(target.port),
    '-U',
    target.user,
    ...args,
    target.database,
  ];
  return runRaw(argv, target.password).then(parseSummary);
}

/** `pgbench -i -s SCALE`: creates and fills the pgbench tables. */
export function initPgbench(target, scale) {
  const argv = [
    '-i',
    '-q',
    '-s',
    String(scale),
    '-h',
    target.host,
    '-p',
    String(target.port),
    '-U',
    target.user,
    target.database,
  ];
  return runRaw(argv, target.password);
}

function runRaw(argv, password) {
  return new Promise((resolve, reject) => {
    const child = spawn('pgbench', argv, { env: { ...process.env, PGPASSWORD: password, PGSSLMODE: 'disable' } });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`pgbench ${argv.join(' ')} exited ${code}:\n${out.slice(-2000)}`));
    });
  });
}

export function parseSummary(out) {
  const tps = /^tps = ([\d.]+) \(without initial connection time\)/m.exec(out);
  const processed = /^number of transactions actually processed: (\d+)/m.exec(out);
  const failed = /^number of failed transactions: (\d+)/m.exec(out);
  if (!tps || !processed) throw new Error(`cannot read pgbench summary:\n${out.slice(-2000)}`);
  return { tps: Number(tps[1]), transactions: Number(processed[1]), failed: failed ? Number(failed[1]) : 0 };
}
