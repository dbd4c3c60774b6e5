// Prints "N passed, N failed[, N skipped]" from vitest's JUnit report (CI reads this line, not vitest's summary).
import { readFileSync } from 'node:fs';

const xml = readFileSync(process.argv[2] ?? 'test-results/junit.xml', 'utf8');
let passed = 0;
let failed = 0;
let skipped = 0;
for (const m of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
  const body = m[2] ?? '';
  if (/<(failure|error)\b/.test(body)) failed++;
  else if (/<skipped\b/.test(body)) skipped++;
  else passed++;
}
// A suite that failed to load has no testcases but is reported as an error on the suite.
const suiteErrors = [...xml.matchAll(/<testsuite\b[^>]*\berrors="(\d+)"/g)].reduce((n, m) => n + Number(m[1]), 0);
failed += suiteErrors;
// CI reads the last line, which must be exactly `N passed, N failed`; skips are reported on the line before it.
if (skipped) console.log(`(${skipped} skipped)`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
