import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildExporter, loadExportsConfig } from './export-config.js';

describe('exports config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-exports-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('builds every exporter type, with secrets from files and the environment only', () => {
    const tokenFile = write('hec-token', 'hec-secret\n');
    process.env.PGWARDEN_TEST_ES_KEY = 'es-secret';
    const cfg = loadExportsConfig(
      write(
        'exports.yaml',
        `startAt: now
exports:
  - {type: jsonl, path: ${dir}/a.jsonl, gzip: true}
  - {type: jsonl, name: ocsf, path: ${dir}/o.jsonl, format: ocsf}
  - {type: splunk-hec, url: https://splunk:8088, tokenFile: ${tokenFile}}
  - {type: elasticsearch, url: https://es:9200, tokenEnv: PGWARDEN_TEST_ES_KEY}
  - {type: syslog, host: siem, port: 6514, tls: true}
`,
      ),
    );
    expect(cfg.startAt).toBe('now');
    expect(cfg.exports.map(buildExporter).map((e) => e.name)).toEqual([
      'jsonl',
      'ocsf',
      'splunk-hec',
      'elasticsearch',
      'syslog-tls',
    ]);
  });

  it('refuses ambiguous or incomplete configs with a clear message', () => {
    expect(() =>
      loadExportsConfig(write('dup.yaml', 'exports: [{type: jsonl, path: /tmp/a}, {type: jsonl, path: /tmp/b}]')),
    ).toThrow(/two exports named jsonl/);
    expect(() => loadExportsConfig(write('none.yaml', 'startAt: later\nexports: []'))).toThrow(
      /startAt must be beginning or now/,
    );
    expect(() => loadExportsConfig(join(dir, 'missing.yaml'))).toThrow(/cannot read exports config/);
    expect(() => buildExporter({ type: 'splunk-hec', url: 'https://splunk:8088' })).toThrow(
      /needs tokenFile or tokenEnv/,
    );
    expect(() =>
      buildExporter({ type: 'elasticsearch', url: 'https://es', tokenEnv: 'PGWARDEN_TEST_UNSET_VAR' }),
    ).toThrow(/PGWARDEN_TEST_UNSET_VAR/);
    expect(() => buildExporter({ type: 'kafka' } as never)).toThrow(/unknown export type "kafka"/);
  });
});
