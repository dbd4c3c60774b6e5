import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { loadModule, scanSync } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  analyzeSql,
  createSessionState,
  type DatabaseAccessPolicySpec,
  decide,
  initSqlParser,
  parsePolicyDocuments,
} from '../index.js';
import { CORPUS } from './statement-corpus.js';

/**
 * Property: re-spelling a statement the way an evasive client would — keyword and identifier case, comments and
 * line breaks between every pair of tokens — never changes the decision. Tokens come from PostgreSQL's own
 * scanner, so strings, dollar quotes and quoted identifiers are kept intact.
 */
const SEPARATORS = [' ', '\n', '\t', ' /* x */ ', '/**/', ' -- c\n', '\r\n  '];

function respell(sql: string, seeds: number[]): string {
  const tokens = scanSync(sql).tokens;
  return tokens
    .map((t, i) => {
      const seed = seeds[i % seeds.length];
      let text = t.text;
      const bare = t.tokenName === 'IDENT' && !text.startsWith('"') && !/^u&/i.test(text);
      if (t.keywordKind > 0 || bare) {
        text = [...text].map((ch, j) => ((seed >> (j % 16)) & 1 ? ch.toUpperCase() : ch.toLowerCase())).join('');
      }
      if (t.tokenName === 'SQL_COMMENT') text += '\n'; // a -- comment must still end its line
      return (i === 0 ? '' : SEPARATORS[seed % SEPARATORS.length]) + text;
    })
    .join('');
}

describe('decisions survive re-spelling', () => {
  const policies: Record<string, DatabaseAccessPolicySpec> = {};
  beforeAll(async () => {
    await initSqlParser();
    // scanSync is libpg-query's own wrapper, whose WASM loads when first imported, without waiting: where this
    // worker's parser was already loaded (test files share it), the line above returns before the wrapper is ready.
    await loadModule();
    const load = (f: string) =>
      parsePolicyDocuments(readFileSync(new URL(`../../../examples/${f}`, import.meta.url), 'utf8')).policies[0].spec;
    policies.analyst = load('analyst-readonly.yaml');
    policies.writer = load('writer-review.yaml');
    policies.admin = load('admin-dryrun.yaml');
  });

  it('for every parseable corpus statement under all three example policies', () => {
    const parseable = CORPUS.filter((e) => analyzeSql(e.sql, createSessionState()).ok);
    const subject = { groups: ['data-team'], namespace: 'ops', serviceAccount: 'agent' };
    fc.assert(
      fc.property(
        fc.constantFrom(...parseable),
        fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
        fc.constantFrom('analyst', 'writer', 'admin'),
        (entry, seeds, name) => {
          const sql = respell(entry.sql, seeds);
          const original = decide(policies[name], analyzeSql(entry.sql, createSessionState()), subject);
          const respelled = decide(policies[name], analyzeSql(sql, createSessionState()), subject);
          expect(respelled.action, `${sql}\n${respelled.message}`).toBe(original.action);
          expect(respelled.rule).toBe(original.rule);
        },
      ),
      { numRuns: 600 },
    );
  });
});
