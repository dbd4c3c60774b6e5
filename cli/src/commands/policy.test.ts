import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { analyzeSql, createSessionState, decide, initSqlParser, parsePolicyDocuments } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { formatExplain, lintFiles } from './policy.js';

const examples = (f: string) => new URL(`../../../examples/${f}`, import.meta.url).pathname;

describe('pgwarden policy lint', () => {
  it('passes the shipped examples', () => {
    const out: string[] = [];
    const files = [
      'analyst-readonly.yaml',
      'writer-review.yaml',
      'admin-dryrun.yaml',
      'masking-pii.yaml',
      'batch-writer-guardrails.yaml',
    ].map(examples);
    expect(lintFiles(files, (s) => out.push(s))).toBe(0);
    // No warnings either: they can be applied together (`pgwarden inject --policies examples/`).
    expect(out.join('')).toBe('4 policies, 1 masking rules, 0 errors\n');
  });

  it('warns of two policies on one port whose pod selectors may select the same pods', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-lint-'));
    const file = join(dir, 'ports.yaml');
    const policy = (name: string, selector: string, port = 5432) =>
      `apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: ${name}, namespace: agents}\nspec: {database: {host: h, name: d}, podSelector: ${selector}, listen: {port: ${port}}}\n`;
    writeFileSync(
      file,
      [
        policy('all', '{}'),
        policy('a', '{matchLabels: {app: a}}'),
        policy('b', '{matchLabels: {app: b}}'),
        policy('other-port', '{}', 6432),
      ].join('---\n'),
    );
    const out: string[] = [];
    expect(lintFiles([file], (s) => out.push(s))).toBe(0);
    const warnings = out.filter((l) => l.startsWith('warning:'));
    // `all` selects every pod: it collides with a and b; a and b exclude each other; other-port collides with none.
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain(
      'DatabaseAccessPolicy/agents/a: /spec/listen/port: listens on port 5432 like DatabaseAccessPolicy/agents/all',
    );
    expect(warnings[1]).toContain(
      'DatabaseAccessPolicy/agents/b: /spec/listen/port: listens on port 5432 like DatabaseAccessPolicy/agents/all',
    );
  });

  it('fails on schema errors and shadowed rules, naming file and path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-lint-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      'apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: p}\nspec:\n  database: {host: h, name: d}\n  rules:\n    - {name: a, action: allow}\n    - {name: b, action: allow, statements: [select]}\n---\napiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: q}\nspec: {database: {host: h, name: d}, defaultAction: never}\n',
    );
    const out: string[] = [];
    expect(lintFiles([file], (s) => out.push(s))).toBe(1);
    const text = out.join('');
    expect(text).toContain(`${file}: error: DatabaseAccessPolicy/p: /spec/rules/1: rule "b" is shadowed by rule "a"`);
    expect(text).toContain(`${file}: error: document 1 DatabaseAccessPolicy/q: /spec/defaultAction: must be one of`);
  });
});

describe('pgwarden policy explain', () => {
  it('names the rule, statement and relations behind a decision', async () => {
    await initSqlParser();
    const { readFileSync } = await import('node:fs');
    const spec = parsePolicyDocuments(readFileSync(examples('writer-review.yaml'), 'utf8')).policies[0].spec;
    const a = analyzeSql('SELECT 1; DELETE FROM hr.salaries WHERE id = 1', createSessionState());
    const text = formatExplain('writer', a, decide(spec, a, { groups: [] }));
    expect(text).toContain('policy writer: DENY (rule "no-hr")');
    expect(text).toContain('relations hr.salaries (write)');
    expect(text).toContain('statement 2: DELETE FROM hr.salaries WHERE id = 1');
  });

  it('shows the guardrails a write runs under', async () => {
    await initSqlParser();
    const doc = `apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: w}\nspec:\n  database: {host: h, name: d}\n  defaultAction: allow\n  guardrails: {maxRowsAffected: 50, statementTimeout: 2s}\n`;
    const spec = parsePolicyDocuments(doc).policies[0].spec;
    const a = analyzeSql('UPDATE t SET a = 1 WHERE id < 10', createSessionState());
    const text = formatExplain('w', a, decide(spec, a, { groups: [] }));
    expect(text).toContain(
      '  maxRowsAffected 50 (changing more rows, counting triggers, cascades and functions, is undone)',
    );
    expect(text).toContain('  timeout 2000 ms');
    const r = analyzeSql('SELECT * FROM t', createSessionState());
    expect(formatExplain('w', r, decide(spec, r, { groups: [] }))).not.toContain('maxRowsAffected');
  });
});
