import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  NAME_SCRIPTS,
  PROCEDURAL_NAME_SCRIPTS,
  runBoth,
  runScript,
  SCRIPTS,
} from '../../sidecar/src/testing/differential-scripts.js';
import { errorOf, msg, RawClient } from '../../sidecar/src/testing/raw-client.js';
import { connectUpstream } from '../../sidecar/src/upstream/connect.js';
import { type Governed, startGoverned } from './governed-sidecar.js';

// The differential scripts again, through the production path: the sidecar started from a policy file, every
// statement parsed by libpg-query and decided by the policy engine. With a policy that allows everything (DDL
// included) it must stay byte-for-byte PostgreSQL, except where a policy is there to refuse: FunctionCall, which
// no policy can allow (docs/security.md), and SQL that does not parse, which is refused before PostgreSQL sees it;
// both are checked below on their own.

/** Scripts whose outcome under any policy is a refusal by design (checked separately). */
const REFUSED_BY_DESIGN = new Set([
  'FunctionCall (abs of int4)',
  'syntax error with position, unknown column with hint',
]);

const shared = inject('pg');
/** The login startGoverned gives the sidecar (test/harness/postgres.ts ROLES). */
const LOGIN = { username: 'app_scram', password: 'scram-pw-1' };
const PERMISSIVE = {
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name: 'permissive' },
  spec: {
    database: { host: shared.host, name: shared.database },
    defaultAction: 'allow',
    guardrails: { blockDDL: false },
  },
};
/**
 * Masking in force for the policy, with column rules and text detectors that match nothing the scripts produce: the
 * masking layer plans every result and scans every notice, error and COPY line, and must still change no byte.
 */
const MASKING_NOTHING = {
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'MaskingRule',
  metadata: { name: 'nothing-here' },
  spec: {
    policies: ['permissive'],
    columns: [{ table: 'public.customers_nowhere', column: 'email', strategy: { type: 'email' } }],
    detectors: ['email', 'credit-card', 'us-ssn'],
  },
};

/**
 * With column rules in force, some message texts are redacted by design (docs/masking.md, "Every output channel"):
 * after user-defined code (DO) notices are withheld whole, and a `"quoted"` fragment the client did not write in
 * SQL or a protocol name (here: a value from its own COPY data) loses its value. In these scripts only the type and
 * SQLSTATE of errors and notices are compared; every other message, DataRows included, must still be byte-identical.
 * All other scripts must be byte-identical under masking too.
 */
const REDACTED_UNDER_MASKING = new Set([
  'notices and warnings, SET sends ParameterStatus',
  'COPY FROM STDIN (done and failed) and COPY TO STDOUT',
  'a notice between the results of a multi-statement query, and a long statement',
  'COPY FROM STDIN through the extended protocol as libpq sends it: a Sync before the data and one after',
]);

function messageTextsRedacted(lines: string[]): string[] {
  return lines.map((l) =>
    l.startsWith('E ') || l.startsWith('N ') ? `${l[0]} ${/\0C([0-9A-Z]{5})\0/.exec(l)?.[1]}` : l,
  );
}

describe.each([
  ['defaultAction allow', [], false],
  ['defaultAction allow, with a MaskingRule that matches nothing', [MASKING_NOTHING], true],
])('differential through the governed sidecar (policy: %s)', (_label, extraDocs, redacts) => {
  let g: Governed;
  beforeAll(async () => {
    g = await startGoverned(shared.database, PERMISSIVE, { extraDocs });
  });
  afterAll(() => g.close());

  for (const name of Object.keys(SCRIPTS)) {
    if (REFUSED_BY_DESIGN.has(name)) continue;
    it(name, async () => {
      const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
      const { direct, proxied } = await runBoth(name, upstream, LOGIN, g.port);
      expect(direct.length).toBeGreaterThan(0);
      if (redacts && REDACTED_UNDER_MASKING.has(name)) {
        expect(messageTextsRedacted(proxied)).toEqual(messageTextsRedacted(direct));
        expect(proxied).not.toEqual(direct); // else the script belongs with the exact ones
      } else expect(proxied).toEqual(direct);
    });
  }

  // The policy's parser names each statement's kind: names a failing multi-statement Query did not remove stay usable.
  // With masking in force, the messages of errors after user-defined code (DO, CALL) ran are withheld by design.
  const names = redacts ? NAME_SCRIPTS : { ...NAME_SCRIPTS, ...PROCEDURAL_NAME_SCRIPTS };
  for (const [name, { steps }] of Object.entries(names)) {
    it(`names: ${name}`, async () => {
      const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
      const direct = RawClient.fromSocket((await connectUpstream(upstream, LOGIN, {})).socket);
      const { client: proxied } = await RawClient.startup(g.port, { user: 'agent', database: 'app' });
      try {
        const want = await runScript(direct, steps);
        expect(await runScript(proxied, steps)).toEqual(want);
      } finally {
        direct.close();
        proxied.close();
      }
    });
  }

  it("SQL that does not parse: PostgreSQL's SQLSTATE, message and position, and a hint naming pgwarden", async () => {
    const up = await connectUpstream(
      { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      LOGIN,
      {},
    );
    const direct = RawClient.fromSocket(up.socket);
    const { client: proxied } = await RawClient.startup(g.port, { user: 'agent', database: 'app' });
    try {
      for (const sql of [
        'SELEC 1',
        'SELECT 1; SELECT (2',
        "SELECT 'unterminated",
        'SELECT * FROM',
        // Positions count characters, not bytes: multibyte text before the error.
        "SELECT 'héllo wörld 😀', 'ü' FROM WHERE",
      ]) {
        const fields = async (c: RawClient) => {
          c.send(msg.query(sql));
          const got = await c.untilReady();
          expect(got.map((m) => String.fromCharCode(m.type)).join(' '), sql).toBe('E Z');
          return errorOf(got[0]);
        };
        const want = await fields(direct);
        const have = await fields(proxied);
        for (const f of ['S', 'V', 'C', 'M', 'P']) expect(have.get(f), `${sql}: field ${f}`).toBe(want.get(f));
        expect(have.get('H')).toMatch(/^pgwarden refused the statement/);
      }
    } finally {
      direct.close();
      proxied.close();
    }
  });
});
