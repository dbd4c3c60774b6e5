import { type AuditEvent, canonicalJson, hashEvent, verifyChain } from '@pgwarden/policy';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { SessionInfo, StatementRecord, StatementResult, Verdict } from '../proxy/hooks.js';
import { createAuditRecorder, type StatementCapture } from './audit-recorder.js';
import { eventJson } from './audit-sink.js';

/**
 * statement-json.ts writes statement events' canonical JSON by hand; the generic path (event object →
 * sealEventToJson → canonicalJson) is the reference. Both recorders here see the same sessions, records and clock:
 * one through a sink that takes text (the direct encoder), one through a sink that takes objects (the generic one).
 * Every line must be byte-identical, hash-chained and verifiable.
 */

// Any UTF-16 (lone surrogates included), control characters, quotes, backslashes and non-BMP text.
const text = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('"', '\\', '\n', '\u0000', '\u001f', '\u2028', 'é', '😀', '\ud800', 'a', ' ') }),
  fc.constantFrom('', 'SELECT 1', "ALTER ROLE x PASSWORD 'hunter2'", 'postgres://u:secret@db/x', '0', '__proto__'),
);
const optText = fc.option(text, { nil: undefined });
const finite = fc.oneof(
  // Bounded: a duration times 1000 (rounding to µs) must stay finite, as real durations do.
  fc.double({ min: -1e300, max: 1e300, noNaN: true }),
  fc.double({ min: -1e9, max: 1e12, noNaN: true }), // durations: the fast decimal route of ms3
  fc.integer({ min: -1, max: 1_000_000 }),
  fc.constantFrom(0, -0, 0.0005, -0.0005, 1e21, 123.4565, 5e-324, 999_999_999_999.9995, 0.1 + 0.2),
);
const names = fc.array(text, { maxLength: 3 });

const result: fc.Arbitrary<StatementResult & Record<string, unknown>> = fc.record(
  {
    tag: optText,
    rows: fc.nat(),
    bytes: fc.nat(),
    changed: fc.option(fc.nat(), { nil: undefined }),
    error: fc.option(fc.record({ code: text, message: text }), { nil: undefined }),
    masking: fc.option(fc.record({ columns: names, cells: fc.nat() }), { nil: undefined }),
    sample: fc.option(
      fc.record({
        columns: names,
        rows: fc.array(fc.array(fc.option(text, { nil: null }), { maxLength: 3 }), { maxLength: 2 }),
        truncated: fc.boolean(),
      }),
      { nil: undefined },
    ),
  },
  { requiredKeys: ['rows', 'bytes'] },
);

const detail = fc.record(
  { text, kind: optText, fingerprint: optText, tables: names, functions: names },
  { requiredKeys: ['text'] },
);

const verdict: fc.Arbitrary<Verdict> = fc.oneof(
  fc.record(
    {
      action: fc.constantFrom('allow', 'dryrun') as fc.Arbitrary<'allow' | 'dryrun'>,
      rule: optText,
      reason: optText,
      policy: fc.record({ name: text, hash: text }),
      statements: fc.array(detail, { maxLength: 3 }),
      heldMs: fc.nat(),
    },
    { requiredKeys: ['action'] },
  ),
  fc.record(
    {
      action: fc.constant('deny') as fc.Arbitrary<'deny'>,
      code: text,
      message: text,
      rule: optText,
      reason: optText,
      policy: fc.record({ name: text, hash: text }),
      statements: fc.array(detail, { maxLength: 3 }),
    },
    { requiredKeys: ['action', 'code', 'message'] },
  ),
);

const statementRecord: fc.Arbitrary<StatementRecord> = fc.record({
  request: fc.record(
    {
      sql: text,
      protocol: fc.constantFrom('simple', 'extended') as fc.Arbitrary<'simple' | 'extended'>,
      txStatus: fc.constant('I' as const),
      params: fc.array(fc.option(text, { nil: null }), { maxLength: 3 }),
      // Not always one per param: a list that does not line up is left out by both builders.
      paramFormats: fc.array(fc.constantFrom('text' as const, 'binary' as const), { maxLength: 3 }),
    },
    { requiredKeys: ['sql', 'protocol', 'txStatus'] },
  ),
  verdict,
  results: fc.array(result, { maxLength: 3 }),
  startedAt: fc.date({
    min: new Date('1970-01-01T00:00:00Z'),
    max: new Date('2200-01-01T00:00:00Z'),
    noInvalidDate: true,
  }),
  durationMs: finite,
  upstreamMs: finite,
  heldMs: finite,
});

const capture: fc.Arbitrary<StatementCapture | undefined> = fc.option(
  fc.record({ captureResults: fc.constantFrom('none', 'summary', 'rows', undefined) }),
  { nil: undefined },
);

const sessionInfo: fc.Arbitrary<SessionInfo> = fc.record({
  id: text,
  startedAt: fc.constant(new Date('2026-01-01T00:00:00Z')),
  client: fc.record({ address: text, port: fc.nat(65535) }),
  startup: fc.record({ user: text, database: text, applicationName: optText, params: fc.constant({}) }),
  identity: fc.record(
    { namespace: optText, serviceAccount: optText, pod: optText, user: optText, issuer: optText, groups: names },
    { requiredKeys: ['groups'] },
  ),
  upstream: fc.record({ host: text, port: fc.nat(65535), database: text, user: text, tls: fc.boolean() }),
});

/** Runs one session through a recorder and returns every line its sink was given. */
function recordLines(
  direct: boolean,
  s: {
    info: SessionInfo;
    role?: string;
    opts: { captureParams: boolean; maxTextChars: number; policy?: { name: string; hash: string } };
    steps: { record: StatementRecord; capture?: StatementCapture }[];
  },
): string[] {
  const lines: string[] = [];
  let clock = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z in µs
  const sink = direct
    ? { emit: () => expect.fail('object path used'), emitJson: (j: string) => void lines.push(j) }
    : { emit: (e: Record<string, unknown>) => void lines.push(eventJson(e)) };
  const recorder = createAuditRecorder(
    { ...sink, ready: () => true, close: async () => {} },
    {
      instanceId: 'inst-"1"',
      source: { pod: 'p', namespace: 'ns', version: '0.1.0' },
      captureParams: s.opts.captureParams,
      maxTextChars: s.opts.maxTextChars,
      policy: () => s.opts.policy,
      role: () => s.role,
      now: () => (clock += 1_234_567),
    },
  );
  const session = recorder.openSession(s.info);
  for (const step of s.steps) session.statement(step.record, step.capture);
  session.end({ reason: 'client closed' });
  return lines;
}

describe('statement events encoded directly', () => {
  it('are byte-identical to the generic encoding and chain like it', () => {
    fc.assert(
      fc.property(
        fc.record({
          info: sessionInfo,
          role: optText,
          opts: fc.record(
            {
              captureParams: fc.boolean(),
              maxTextChars: fc.constantFrom(0, 3, 32_768),
              policy: fc.record({ name: text, hash: text }),
            },
            { requiredKeys: ['captureParams', 'maxTextChars'] },
          ),
          steps: fc.array(fc.record({ record: statementRecord, capture }, { requiredKeys: ['record'] }), {
            minLength: 1,
            maxLength: 4,
          }),
        }),
        (s) => {
          const direct = recordLines(true, s);
          const generic = recordLines(false, s);
          expect(direct).toEqual(generic);
          const events = direct.map((l) => JSON.parse(l) as AuditEvent);
          for (const e of events) expect(hashEvent(e)).toBe(e.hash);
          expect(verifyChain(events).ok).toBe(true);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('writes members in canonical order for a typical pgbench statement', () => {
    const lines = recordLines(true, {
      info: {
        id: 's1',
        startedAt: new Date(0),
        client: { address: '127.0.0.1', port: 1 },
        startup: { user: 'u', database: 'd', params: {} },
        identity: { groups: [] },
        upstream: { host: 'h', port: 5432, database: 'd', user: 'u', tls: false },
      },
      opts: { captureParams: false, maxTextChars: 32_768 },
      steps: [
        {
          record: {
            request: { sql: 'SELECT 1', protocol: 'simple', txStatus: 'I' },
            verdict: { action: 'allow', rule: 'allow-all', reason: 'no policy configured' },
            results: [{ tag: 'SELECT 1', rows: 1, bytes: 11 }],
            startedAt: new Date('2026-01-01T00:00:01.250Z'),
            durationMs: 0.1234567,
            upstreamMs: 0.1,
            heldMs: 0,
          },
        },
      ],
    });
    const statement = JSON.parse(lines[1]) as AuditEvent;
    const { hash, ...rest } = statement;
    expect(lines[1]).toBe(`${canonicalJson(rest).slice(0, -1)},"hash":"${hash}"}`);
    expect(lines[1]).toContain(
      '"statement":{"functions":[],"protocol":"simple","tables":[],"text":"SELECT 1"},"time":"2026-01-01T00:00:03.703701Z","timing":{"durationMs":0.123,"heldMs":0,"start":"2026-01-01T00:00:01.250000Z","upstreamMs":0.1},"type":"statement","v":1,',
    );
  });
});
