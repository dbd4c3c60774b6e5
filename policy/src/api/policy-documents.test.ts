import { describe, expect, it } from 'vitest';
import { PolicyError } from '../errors.js';
import { parsePolicyDocuments } from './load-documents.js';
import { parseRenderedPolicy, renderPolicy, serializeRenderedPolicy } from './render-policy.js';

const header =
  'apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: p, namespace: agents}\n';
const minimal = `${header}spec:\n  database: {host: db, name: app}\n`;
const rule = `---\napiVersion: pgwarden.dev/v1alpha1\nkind: MaskingRule\nmetadata: {name: m, namespace: agents}\nspec:\n  policies: [p]\n  columns: [{table: public.c, column: email, strategy: {type: partial, keepLast: 4}}]\n`;

describe('parsePolicyDocuments', () => {
  it('fills defaults into a minimal policy', () => {
    const d = parsePolicyDocuments(minimal);
    expect(d.errors).toEqual([]);
    const s = d.policies[0].spec;
    expect(s.defaultAction).toBe('deny');
    expect(s.database.port).toBe(5432);
    expect(s.database.sslMode).toBe('verify-full');
    expect(s.database.channelBinding).toBe('prefer');
    expect(s.guardrails).toEqual({
      blockDDL: true,
      requireWhere: ['update', 'delete'],
      maxRowsReturned: 0,
      blockedFunctions: [],
      maxConnections: 0,
    });
    expect(s.audit).toEqual({
      captureResults: 'summary',
      maxResultBytes: 65536,
      captureParams: false,
      statementText: 'full',
      fingerprint: false,
      failMode: 'closed',
    });
    expect(s.masking).toMatchObject({ lineage: 'strict', maskedColumnPredicates: 'deny' });
  });

  it('reports schema errors with exact paths and reasons', () => {
    const text = `${header}spec:\n  database: {host: db, name: app, port: 70000}\n  rules:\n    - {name: a, action: permit}\n    - {name: b, action: allow, statements: [selekt], tablez: [x]}\n  guardrails: {statementTimeout: 10}\n`;
    const errors = parsePolicyDocuments(text).errors.map((e) => `${e.path} ${e.message}`);
    expect(errors).toEqual(
      expect.arrayContaining([
        '/spec/database/port must be <= 65535',
        '/spec/rules/0/action must be one of: allow, deny, review, dryrun',
        '/spec/rules/1/tablez unknown field',
        '/spec/guardrails/statementTimeout must be string',
      ]),
    );
    expect(errors.some((e) => e.startsWith('/spec/rules/1/statements/0 must be one of: select,'))).toBe(true);
  });

  it('reports missing fields, bad durations, duplicate rule names and oidc without settings', () => {
    const text = `${header}spec:\n  database: {host: db}\n  authentication: {mode: oidc}\n  rules: [{name: a, action: allow}, {name: a, action: deny}]\n  approval: {timeout: 10 minutes}\n`;
    const errors = parsePolicyDocuments(text).errors.map((e) => e.path);
    expect(errors).toContain('/spec/database/name');
    expect(errors).toContain('/spec/approval/timeout');
    const text2 = `${header}spec:\n  database: {host: db, name: x}\n  authentication: {mode: oidc}\n  rules: [{name: a, action: allow}, {name: a, action: deny}]\n`;
    const e2 = parsePolicyDocuments(text2).errors.map((e) => `${e.path} ${e.message}`);
    expect(e2).toEqual([
      '/spec/rules/1/name duplicate rule name (also rules/0)',
      '/spec/authentication/oidc is required when mode is oidc',
    ]);
  });

  it('enforces bounds the CRDs need', () => {
    const long = 'x'.repeat(300);
    const e = parsePolicyDocuments(`${header}spec:\n  database: {host: ${long}, name: app}\n`).errors;
    expect(e.map((i) => `${i.path} ${i.message}`)).toEqual([
      '/spec/database/host must NOT have more than 253 characters',
    ]);
  });

  it('names the document and object, and survives YAML errors and wrong kinds', () => {
    const d = parsePolicyDocuments(`${minimal}---\nkind: Pod\napiVersion: v1\n---\n{ bad: [\n`);
    expect(d.policies).toHaveLength(1);
    expect(d.errors[0]).toMatchObject({ document: 1, path: '/apiVersion' });
    expect(d.errors[1].document).toBe(2);
    expect(d.errors[1].message).toMatch(/^YAML: /);
  });

  it('validates masking rules: exactly one selector, strategy options', () => {
    const bad = `apiVersion: pgwarden.dev/v1alpha1\nkind: MaskingRule\nmetadata: {name: m}\nspec:\n  columns: [{table: t, column: c, strategy: {type: redact, keepLast: 2}}]\n`;
    const e = parsePolicyDocuments(bad).errors.map((i) => `${i.path} ${i.message}`);
    expect(e).toEqual([
      '/spec/policies exactly one of policies or policySelector is required',
      '/spec/columns/0/strategy/type keepFirst/keepLast apply only to type partial',
    ]);
  });
});

describe('renderPolicy', () => {
  it('is deterministic, selects masking rules, and round-trips with its hash', () => {
    const d = parsePolicyDocuments(minimal + rule);
    const a = renderPolicy(d.policies[0], d.maskingRules);
    const b = renderPolicy(d.policies[0], [...d.maskingRules].reverse());
    expect(serializeRenderedPolicy(a)).toBe(serializeRenderedPolicy(b));
    expect(a.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(a.maskingRules.map((m) => m.name)).toEqual(['m']);
    expect(parseRenderedPolicy(serializeRenderedPolicy(a))).toEqual(a);
  });

  it('rejects a tampered rendered policy', () => {
    const d = parsePolicyDocuments(minimal);
    const json = serializeRenderedPolicy(renderPolicy(d.policies[0], [])).replace(
      '"defaultAction":"deny"',
      '"defaultAction":"allow"',
    );
    expect(() => parseRenderedPolicy(json)).toThrowError(PolicyError);
    try {
      parseRenderedPolicy(json);
    } catch (e) {
      expect((e as PolicyError).code).toBe('PGW_RENDERED_HASH_MISMATCH');
    }
  });

  it('rejects an invalid rendered policy with paths', () => {
    const d = parsePolicyDocuments(minimal);
    const json = serializeRenderedPolicy(renderPolicy(d.policies[0], [])).replace(
      '"defaultAction":"deny"',
      '"defaultAction":"maybe"',
    );
    expect(() => parseRenderedPolicy(json)).toThrowError(/\/policy\/spec\/defaultAction: must be one of/);
  });
});
