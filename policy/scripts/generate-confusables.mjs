/**
 * Writes policy/src/engine/confusable-prototypes.ts, the prototype table of Unicode's confusables (UTS #39,
 * https://www.unicode.org/reports/tr39/#Confusable_Detection) that lookAlikeSkeleton reads names with.
 *
 *   node policy/scripts/generate-confusables.mjs                       # the pinned source below
 *   node policy/scripts/generate-confusables.mjs confusables.txt 17.0.0 # a confusables.txt of that Unicode version
 *
 * The pinned source: this machine reaches only the npm registry and Debian's packages, and neither ships Unicode's
 * confusables.txt itself (Debian's unicode-data has no security/ files). npm's unhomoglyph 1.0.6 (MIT, the data under
 * Unicode's license) ships it as data.json, every line of confusables.txt 13.0.0 as `source: prototype` (its
 * CHANGELOG: "Update mapping data to version 13.0.0"; it has that version's new entries, the segmented digits
 * U+1FBF0..U+1FBF9). It is fetched with `npm pack` and checked against the registry's sha512 pinned here, so the
 * table cannot change under us. Given a confusables.txt (when one can be had), the script reads it instead.
 *
 * The table is ASCII (safe inside the web UI's <script>) and compact: entries sorted by source code point, runs of
 * consecutive sources written once (`+`: the prototype steps with the source, as for mathematical alphabets; `=`: one
 * prototype for all), numbers in base 36. decodeTable below is the reader's algorithm; the output is checked by
 * decoding it back.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PINNED = {
  spec: 'unhomoglyph@1.0.6',
  integrity: 'sha512-7uvcWI3hWshSADBu4JpnyYbTVc7YlhF5GDW/oPD5AxIxl34k4wXR3WDkPnzLxkN32LiTCTKMQLtKVZiwki3zGg==',
  unicodeVersion: '13.0.0',
};
const OUT = new URL('../src/engine/confusable-prototypes.ts', import.meta.url);

/** Map of source code point to the prototype's code points. */
function fromPinnedPackage() {
  const dir = mkdtempSync(join(tmpdir(), 'confusables-'));
  try {
    const name = execFileSync('npm', ['pack', PINNED.spec, '--pack-destination', dir, '--silent'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .pop();
    const tgz = readFileSync(join(dir, name));
    const integrity = `sha512-${createHash('sha512').update(tgz).digest('base64')}`;
    if (integrity !== PINNED.integrity)
      throw new Error(`${PINNED.spec}: integrity ${integrity}, expected ${PINNED.integrity}`);
    execFileSync('tar', ['xzf', join(dir, name), '-C', dir, 'package/data.json']);
    const data = JSON.parse(readFileSync(join(dir, 'package/data.json'), 'utf8'));
    const map = new Map();
    for (const [from, to] of Object.entries(data)) {
      const cps = [...from].map((c) => c.codePointAt(0));
      if (cps.length !== 1) throw new Error(`source ${JSON.stringify(from)} is not one code point`);
      map.set(
        cps[0],
        [...to].map((c) => c.codePointAt(0)),
      );
    }
    return { map, source: `npm ${PINNED.spec} (data.json, sha512 checked)`, version: PINNED.unicodeVersion };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** confusables.txt: `source ; prototype ; type # comment`, code points in hex. */
function fromConfusablesTxt(path, version) {
  const map = new Map();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const data = line
      .replace(/^\ufeff/, '')
      .replace(/#.*/, '')
      .trim();
    if (!data) continue;
    const [from, to] = data.split(';').map((f) =>
      f
        .trim()
        .split(/\s+/)
        .map((h) => Number.parseInt(h, 16)),
    );
    if (from.length !== 1) throw new Error(`source ${data} is not one code point`);
    map.set(from[0], to);
  }
  return { map, source: `confusables.txt (${path.split('/').pop()})`, version };
}

function encodeTable(map) {
  const entries = [...map].sort((a, b) => a[0] - b[0]);
  const runs = [];
  for (const [src, to] of entries) {
    const r = runs.at(-1);
    if (r && to.length === 1 && r.to.length === 1 && src === r.src + r.n) {
      const step = r.n === 1 ? to[0] - r.to[0] : r.step;
      if ((step === 0 || step === 1) && to[0] === r.to[0] + step * r.n) {
        r.step = step;
        r.n++;
        continue;
      }
    }
    runs.push({ src, to, n: 1, step: 0 });
  }
  let last = 0;
  return runs
    .map((r) => {
      const gap = (r.src - last).toString(36);
      last = r.src + r.n - 1;
      const count = r.n > 1 ? `${r.step ? '+' : '='}${r.n.toString(36)}` : '';
      return `${gap}${count}:${r.to.map((c) => c.toString(36)).join('.')}`;
    })
    .join(',');
}

/** The same reading as lookAlikeSkeleton's, kept here to check the output. */
function decodeTable(table) {
  const map = new Map();
  let src = 0;
  for (const run of table.split(',')) {
    const [head, to] = run.split(':');
    const [gap, op, count] = head.split(/([+=])/);
    const cps = to.split('.').map((c) => Number.parseInt(c, 36));
    src += Number.parseInt(gap, 36);
    const n = count ? Number.parseInt(count, 36) : 1;
    for (let i = 0; i < n; i++) map.set(src + i, op === '+' ? [cps[0] + i] : cps);
    src += n - 1;
  }
  return map;
}

const [path, version] = process.argv.slice(2);
if (path && !version) throw new Error('usage: generate-confusables.mjs [confusables.txt UNICODE_VERSION]');
const { map, source, version: unicodeVersion } = path ? fromConfusablesTxt(path, version) : fromPinnedPackage();
const table = encodeTable(map);
const back = decodeTable(table);
if (back.size !== map.size || [...map].some(([k, v]) => back.get(k)?.join() !== v.join()))
  throw new Error('the encoded table does not decode to the data');

const lines = table.match(/.{1,110}(,|$)/g);
writeFileSync(
  OUT,
  `// Generated by policy/scripts/generate-confusables.mjs: do not edit, run the script.
// From ${source}.
// Unicode data: https://www.unicode.org/license.txt (Unicode License v3), https://www.unicode.org/terms_of_use.html

/** The Unicode version of the confusables data in CONFUSABLE_PROTOTYPES. */
export const CONFUSABLES_UNICODE_VERSION = '${unicodeVersion}';

/**
 * UTS #39's prototype of each of the ${map.size} characters of confusables.txt: sources sorted by code point as
 * runs \`gap[+n|=n]:prototype\`, numbers in base 36 (the generator's header says more).
 */
export const CONFUSABLE_PROTOTYPES =
${lines.map((l) => `  '${l}'`).join(' +\n')};
`,
);
console.log(`${OUT.pathname}: ${map.size} entries, Unicode ${unicodeVersion}, ${table.length} characters`);
