import { readFileSync } from 'node:fs';
import { initSqlParser, parsePolicyDocuments, renderPolicy } from '@pgwarden/policy';
import { it } from 'vitest';
import { PolicySession } from '../../sidecar/src/governance/policy-session.js';
it('bench', async () => {
  await initSqlParser();
  const p = renderPolicy(parsePolicyDocuments(readFileSync('examples/analyst-readonly.yaml', 'utf8')).policies[0], []);
  const s = new PolicySession({ info: { id: 'x', startedAt: new Date(), client: { address: '', port: 0 }, startup: { user: 'a', database: 'b', params: {} }, identity: { groups: [] }, upstream: { host: '', port: 0, database: '', user: 'u', tls: false } }, policy: () => p, approvals: { request: async () => ({ decision: 'timeout' }) }, emit: () => {} });
  const sql = 'SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = $1 AND o.total > 100 ORDER BY o.id DESC LIMIT 50';
  for (let i = 0; i < 20000; i++) s.checkQuery({ sql, protocol: 'simple', txStatus: 'I' });
  let t = process.hrtime.bigint(); const N = 200000;
  for (let i = 0; i < N; i++) s.checkQuery({ sql, protocol: 'simple', txStatus: 'I' });
  console.log('cached checkQuery µs', Number(process.hrtime.bigint() - t) / N / 1000);
  const M = 5000; t = process.hrtime.bigint();
  for (let i = 0; i < M; i++) s.checkQuery({ sql: sql.replace('100', String(1000 + i)), protocol: 'simple', txStatus: 'I' });
  console.log('uncached checkQuery µs (', sql.length, 'chars)', Number(process.hrtime.bigint() - t) / M / 1000);
});
