/**
 * Cost of folding identity names (deny rules, the four-eyes check) in a fresh process. Run after `npx tsc -b`:
 * node policy/bench/identity-fold-steady.mjs [rounds]
 *
 * Folding runs once per subject of a session and per compiled deny rule (compile-policy.ts caches both) and a few
 * times per approval decision, never per DataRow; this keeps an eye on it when the look-alike table grows. Reports
 * the first call (which builds the table) and the median µs per call over `rounds` rounds after a warm-up.
 */
import { performance } from 'node:perf_hooks';
import { identitySpellings, sameIdentity } from '../dist/engine/identity-fold.js';
import { lookAlikeSkeleton } from '../dist/engine/look-alike-skeleton.js';

const rounds = Number(process.argv[2] ?? 7);
const names = [
  'alice@example.com',
  'Bo.ss+ci@GoogleMail.com',
  'b\u043ess@example.com',
  '\uff42\uff4f\uff53\uff53@example.com',
  '\u{1d41b}\u{1d428}\u{1d42c}\u{1d42c}',
  'system:serviceaccount:agents:analytics',
  'data-team',
  'Dr. J\u00fcrgen M\u00fcller-L\u00fcdenscheidt',
];

let t = performance.now();
lookAlikeSkeleton('a');
console.log(`first call (builds the table): ${(performance.now() - t).toFixed(2)} ms`);

const cases = [
  ['lookAlikeSkeleton', (n) => lookAlikeSkeleton(n)],
  ['identitySpellings', (n) => identitySpellings(n)],
  ['sameIdentity', (n) => sameIdentity(n, 'boss@example.com')],
];
const perCall = 2000;
for (const [name, fn] of cases) {
  for (let i = 0; i < perCall; i++) for (const n of names) fn(n);
  const us = [];
  for (let r = 0; r < rounds; r++) {
    t = performance.now();
    for (let i = 0; i < perCall; i++) for (const n of names) fn(n);
    us.push(((performance.now() - t) * 1000) / (perCall * names.length));
  }
  us.sort((a, b) => a - b);
  console.log(`${name}: median ${us[rounds >> 1].toFixed(2)} µs/name, min ${us[0].toFixed(2)}`);
}
