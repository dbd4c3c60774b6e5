import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { CollectorError } from '../errors.js';
import { elasticsearchExporter } from './elasticsearch-bulk.js';
import type { Exporter } from './export-runner.js';
import { jsonlFileExporter } from './jsonl-file.js';
import { splunkHecExporter } from './splunk-hec.js';
import { syslogExporter } from './syslog-exporter.js';

/**
 * The `--exports FILE` document (YAML or JSON). Secrets are never inline: tokens come from a file (a mounted
 * Secret) or an environment variable, so the config file itself can be shared and logged.
 */
export interface ExportsConfig {
  startAt?: 'beginning' | 'now';
  exports: ExportSpec[];
}

type Secret = { tokenFile?: string; tokenEnv?: string };
export type ExportSpec =
  | { type: 'jsonl'; name?: string; path: string; maxBytes?: number; gzip?: boolean; format?: 'pgwarden' | 'ocsf' }
  | ({ type: 'splunk-hec'; name?: string; url: string; index?: string; sourcetype?: string; caFile?: string } & Secret)
  | ({
      type: 'elasticsearch';
      name?: string;
      url: string;
      index?: string;
      caFile?: string;
      authScheme?: 'ApiKey' | 'Basic' | 'Bearer';
    } & Secret)
  | {
      type: 'syslog';
      name?: string;
      host: string;
      port: number;
      tls?: boolean | { caFile?: string; servername?: string };
      facility?: number;
      format?: 'pgwarden' | 'ocsf';
    };

function fail(msg: string): never {
  throw new CollectorError('COLLECTOR_BAD_CONFIG', `exports config: ${msg}`);
}

function secret(s: Secret, what: string): string {
  if (s.tokenFile) return readFileSync(s.tokenFile, 'utf8').trim();
  if (s.tokenEnv) return process.env[s.tokenEnv] ?? fail(`environment variable ${s.tokenEnv} (${what}) is not set`);
  return fail(`${what} needs tokenFile or tokenEnv`);
}

const caOf = (file?: string) => (file ? readFileSync(file, 'utf8') : undefined);

export function loadExportsConfig(file: string): ExportsConfig {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CollectorError('COLLECTOR_BAD_CONFIG', `cannot read exports config ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const c = doc as ExportsConfig;
  if (!c || !Array.isArray(c.exports)) fail('needs an `exports` list');
  if (c.startAt !== undefined && c.startAt !== 'beginning' && c.startAt !== 'now')
    fail('startAt must be beginning or now');
  const names = new Set<string>();
  for (const s of c.exports) {
    const name = s.name ?? s.type;
    if (names.has(name)) fail(`two exports named ${name}: give each a distinct name (it keys its delivery cursor)`);
    names.add(name);
  }
  return c;
}

export function buildExporter(s: ExportSpec): Exporter {
  switch (s.type) {
    case 'jsonl':
      if (!s.path) fail('jsonl needs path');
      return jsonlFileExporter(s);
    case 'splunk-hec':
      if (!s.url) fail('splunk-hec needs url');
      return splunkHecExporter({ ...s, token: secret(s, 'splunk-hec token'), tls: { ca: caOf(s.caFile) } });
    case 'elasticsearch':
      if (!s.url) fail('elasticsearch needs url');
      return elasticsearchExporter({
        ...s,
        authorization:
          s.tokenFile || s.tokenEnv
            ? `${s.authScheme ?? 'ApiKey'} ${secret(s, 'elasticsearch credential')}`
            : undefined,
        tls: { ca: caOf(s.caFile) },
      });
    case 'syslog': {
      if (!s.host || !Number.isInteger(s.port)) fail('syslog needs host and port');
      const tls = s.tls === true ? {} : s.tls || undefined;
      return syslogExporter({ ...s, tls: tls ? { ca: caOf(tls.caFile), servername: tls.servername } : undefined });
    }
    default:
      return fail(`unknown export type ${JSON.stringify((s as { type?: unknown }).type)}`);
  }
}
