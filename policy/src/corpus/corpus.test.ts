import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  analyzeSql,
  createSessionState,
  type DatabaseAccessPolicySpec,
  decide,
  initSqlParser,
  parsePolicyDocuments,
  type Subject,
} from '../index.js';
import { CORPUS, type Expect } from './statement-corpus.js';

const examples = new URL('../../../examples/', import.meta.url);
function load(file: string): DatabaseAccessPolicySpec {
  const docs = parsePolicyDocuments(readFileSync(new URL(file, examples), 'utf8'));
  expect(docs.errors).toEqual([]);
  return docs.policies[0].spec;
}

const LETTER: Record<string, Expect> = { allow: 'A', deny: 'D', review: 'R', dryrun: 'Y' };
const subjects: Record<string, Subject> = {
  analyst: { groups: ['data-team'] },
  writer: { groups: ['data-team'] },
  'writer-oncall': { groups: ['oncall'] },
  admin: { groups: [], namespace: 'ops', serviceAccount: 'agent' },
  'admin-maint': { groups: [], namespace: 'ops', serviceAccount: 'db-maintenance' },
};

describe('statement corpus under the example policies', () => {
  const policies: Record<string, DatabaseAccessPolicySpec> = {};
  beforeAll(async () => {
    await initSqlParser();
    policies.analyst = load('analyst-readonly.yaml');
    policies.writer = load('writer-review.yaml');
    policies.admin = load('admin-dryrun.yaml');
  });

  it('has at least 150 statements', () => {
    expect(CORPUS.length).toBeGreaterThanOrEqual(150);
  });

  const cases = CORPUS.flatMap((e) => {
    const list: [string, string, string, Expect][] = [
      [e.sql, 'analyst', 'analyst', e.analyst],
      [e.sql, 'writer', 'writer', e.writer],
      [e.sql, 'admin', 'admin', e.admin],
    ];
    for (const [who, want] of Object.entries(e.extra ?? {})) list.push([e.sql, who.split('-')[0], who, want as Expect]);
    return list;
  });

  it.each(cases)('%s  [%s as %s] → %s', (sql, policy, subject, want) => {
    const session = createSessionState({ searchPath: ['public'] });
    const decision = decide(policies[policy], analyzeSql(sql, session), subjects[subject]);
    expect(LETTER[decision.action], decision.message).toBe(want);
    if (decision.action === 'deny') {
      expect(decision.code).toMatch(/^42(501|601)$/);
      // Unparseable SQL gets PostgreSQL's own syntax error; the hint says pgwarden refused it.
      if (decision.code === '42601') expect(decision.hint).toMatch(/^pgwarden refused the statement/);
      else expect(decision.message).toMatch(/^pgwarden: statement denied/);
    }
  });

  it('a repeated statement gets the same decision from the caches', () => {
    const session = createSessionState();
    const s = subjects.analyst;
    for (const e of CORPUS.slice(0, 40)) {
      const first = decide(policies.analyst, analyzeSql(e.sql, session), s).action;
      const again = decide(policies.analyst, analyzeSql(e.sql, createSessionState()), s).action;
      expect(again).toBe(first);
    }
  });
});
