import { exec } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { promisify } from 'node:util';
import { inject, it } from 'vitest';
import { startFixture } from '../testing/sidecar-fixture.js';
const pexec = promisify(exec);

it('perf rows', async () => {
  const shared = inject('pg');
  const env = { ...process.env, PGPASSWORD: 'scram-pw-1' };
  const fxA = await startFixture({ statementEvents: false });
  const pipe = createServer({ noDelay: true }, (c) => {
    const u = connect({ host: '127.0.0.1', port: shared.port, noDelay: true });
    c.pipe(u);
    u.pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => pipe.listen(0, '127.0.0.1', r));
  const pipePort = (pipe.address() as any).port;
  const direct = `postgresql://app_scram@127.0.0.1:${shared.port}/app`;
  await pexec(`pgbench -i -s 1 "${direct}"`, { env });
  for (const args of ['-M extended -c 1 -T 4 -f bench/rows1000.sql', '-M extended -c 8 -j 2 -T 4 -f bench/rows1000.sql']) {
    for (const [name, port] of [['pipe', pipePort], ['sidecar', fxA.sidecar.port], ['pipe', pipePort], ['sidecar', fxA.sidecar.port]] as const) {
      const url = `postgresql://app_scram@127.0.0.1:${port}/app`;
      const c0 = process.cpuUsage();
      const r = await pexec(`pgbench -n ${args} "${url}"`, { env, timeout: 60000 });
      const c = process.cpuUsage(c0);
      const n = Number(/number of transactions actually processed: (\d+)/.exec(r.stdout)?.[1]);
      const t = Number(/tps = ([\d.]+)/.exec(r.stdout)?.[1]);
      console.log(`${args.padEnd(40)} ${name.padEnd(8)} tps=${t.toFixed(0).padStart(6)} cpu/tx=${((c.user + c.system) / n).toFixed(1)}us`);
    }
  }
  pipe.close();
  await fxA.sidecar.close(500);
}, 300000);
