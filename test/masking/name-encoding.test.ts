import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GovernedSidecar, startGovernedSidecar } from '../../sidecar/src/governance/index.js';
import { RawClient } from '../governance/raw-client.js';
import { ROLES } from '../harness/index.js';
import { maskingPolicyDocs, type Planted, seed } from './seed.js';

const S = 'mask_names';
let planted: Planted;
let gs: GovernedSidecar;
const events: Record<string, any>[] = [];

beforeAll(async () => {
  planted = await seed(S);
  const shared = inject('pg');
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-names-'));
  const policyFile = join(dir, 'policy.yaml');
  const { policy, rule } = maskingPolicyDocs(S, ['select', 'set']);
  writeFileSync(policyFile, [policy, rule].map((d) => JSON.stringify(d)).join('\n---\n'));
  gs = await startGovernedSidecar({
    policyPath: policyFile,
    listenPort: 0,
    upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
    credentials: { username: ROLES.scram.user, password: ROLES.scram.password },
    audit: { emit: (e) => void events.push(e as Record<string, any>), ready: () => true, close: async () => {} },
    http: false,
    pollMs: 0,
  });
});
afterAll(async () => {
  await gs?.close(100);
});

function msg(type: string, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
const z = (b: Buffer | string) => Buffer.concat([typeof b === 'string' ? Buffer.from(b) : b, Buffer.alloc(1)]);
const parse = (name: Buffer, sql: string) => msg('P', z(name), z(sql), Buffer.alloc(2));
const bind = (portal: string, stmt: Buffer) => msg('B', z(portal), z(stmt), Buffer.alloc(6));
const close = (name: Buffer) => msg('C', Buffer.from('S'), z(name));
const execute = (portal: string) => msg('E', z(portal), Buffer.alloc(4));
const describePortal = (portal: string) => msg('D', Buffer.from('P'), z(portal));
const sync = () => msg('S');

/** Through the sidecar, in a LATIN1 session of the UTF-8 database (PostgreSQL converts names before it keys them). */
async function latin1Client(): Promise<RawClient> {
  const c = await RawClient.connect(gs.listeners[0].sidecar.port, { user: 'agent', database: 'app' }, 'unused');
  // pg-protocol's StartupMessage always ends with client_encoding UTF8: the session switches after it.
  c.send(msg('Q', z(`SET client_encoding = 'LATIN1'`)));
  await c.until('readyForQuery');
  return c;
}

describe('statement names in a client encoding PostgreSQL converts', () => {
  it('a masked statement cannot run under the plan of another whose name PostgreSQL keeps as the same', async () => {
    const c = await latin1Client();
    // 32 LATIN1 'é' are 64 bytes in UTF-8: PostgreSQL keys both names on the same first 63 bytes.
    const a = Buffer.concat([Buffer.alloc(32, 0xe9), Buffer.from('a')]);
    const b = Buffer.concat([Buffer.alloc(32, 0xe9), Buffer.from('b')]);
    c.send(parse(a, `SELECT upper(city) AS v FROM ${S}.customers ORDER BY id`), sync());
    const first = await c.until('readyForQuery');
    expect(first.find((m) => m.name === 'error')?.code).toBe('42602');
    c.send(close(b), parse(b, `SELECT upper(full_name) AS v FROM ${S}.customers ORDER BY id`), sync());
    await c.until('readyForQuery');
    c.send(bind('', a), describePortal(''), execute(''), sync());
    const got = await c.until('readyForQuery');
    expect(got.filter((m) => m.name === 'dataRow')).toEqual([]);
    const text = JSON.stringify(got);
    for (const p of planted.customers) expect(text).not.toContain(p.fullName.toUpperCase());
    c.end();
  });

  it('a non-ASCII name is refused; a long name whose first 63 bytes are ASCII is a statement as before', async () => {
    const c = await latin1Client();
    const short = Buffer.from('caf\xe9', 'latin1');
    c.send(parse(short, `SELECT city FROM ${S}.customers ORDER BY id`), sync());
    expect((await c.until('readyForQuery')).find((m) => m.name === 'error')?.code).toBe('42602');
    // PostgreSQL keeps the first 63 bytes of the converted name: the same 63 ASCII bytes the proxy keys on.
    const long = Buffer.concat([Buffer.alloc(63, 0x78), Buffer.from('\xe9', 'latin1')]);
    c.send(parse(long, `SELECT city FROM ${S}.customers ORDER BY id`), bind('', long), execute(''), sync());
    const got = await c.until('readyForQuery');
    expect(got.filter((m) => m.name === 'dataRow').map((m) => m.fields[0])).toEqual(['Lisbon', 'Oslo', 'Quito']);
    c.send(close(long), sync());
    await c.until('readyForQuery');
    c.end();
  });
});

describe('names when client_encoding changes', () => {
  it('a non-ASCII name made in one encoding is not found by its bytes in another', async () => {
    const c = await RawClient.connect(gs.listeners[0].sidecar.port, { user: 'agent', database: 'app' }, 'unused');
    const name = Buffer.from('é'); // C3 A9: 'é' in UTF8, 'Ã©' in LATIN1
    c.send(parse(name, `SELECT upper(full_name) AS v FROM ${S}.customers ORDER BY id`), sync());
    expect((await c.until('readyForQuery')).find((m) => m.name === 'error')?.code).toBe('42602');
    c.send(msg('Q', z(`SET client_encoding = 'LATIN1'`)));
    await c.until('readyForQuery');
    // PostgreSQL closes and parses 'Ã©' here; the bytes are the same.
    c.send(close(name), parse(name, `SELECT upper(city) AS v FROM ${S}.customers ORDER BY id`), sync());
    await c.until('readyForQuery');
    c.send(msg('Q', z(`SET client_encoding = 'UTF8'`)));
    await c.until('readyForQuery');
    c.send(bind('', name), describePortal(''), execute(''), sync());
    const got = await c.until('readyForQuery');
    const text = JSON.stringify(got);
    for (const p of planted.customers) expect(text).not.toContain(p.fullName.toUpperCase());
    // Neither Parse reached PostgreSQL: it has no such statement (26000, its own answer to the Bind).
    expect(got.find((m) => m.name === 'error')?.code).toBe('26000');
    c.end();
  });

  it('the same, pipelined in one write ahead of the ParameterStatus that reports each change', async () => {
    const c = await RawClient.connect(gs.listeners[0].sidecar.port, { user: 'agent', database: 'app' }, 'unused');
    const name = Buffer.from('é');
    c.send(
      Buffer.concat([
        parse(name, `SELECT upper(full_name) AS v FROM ${S}.customers ORDER BY id`),
        sync(),
        msg('Q', z(`SET client_encoding = 'LATIN1'`)),
        close(name),
        parse(name, `SELECT upper(city) AS v FROM ${S}.customers ORDER BY id`),
        sync(),
        msg('Q', z(`SET client_encoding = 'UTF8'`)),
        bind('', name),
        describePortal(''),
        execute(''),
        sync(),
      ]),
    );
    const got: Record<string, any>[] = [];
    for (let i = 0; i < 5; i++) got.push(...(await c.until('readyForQuery')));
    const text = JSON.stringify(got);
    for (const p of planted.customers) expect(text).not.toContain(p.fullName.toUpperCase());
    expect(got.filter((m) => m.name === 'dataRow')).toEqual([]);
    expect(got.filter((m) => m.name === 'error').map((m) => m.code)).toEqual(['42602', '42602', '26000']);
    c.end();
  });
});
