import { CollectorError } from '../errors.js';
import type { AuditEvent } from '../event.js';
import { toEcs } from './ecs-mapping.js';
import type { Exporter } from './export-runner.js';
import { post, type TlsClientOptions } from './http-post.js';

export interface ElasticsearchOptions {
  name?: string;
  /** Cluster URL, e.g. https://es:9200 (Elasticsearch or OpenSearch: both speak `_bulk`). */
  url: string;
  index?: string;
  /** `Authorization` header value, e.g. `ApiKey ...` or `Basic ...`. */
  authorization?: string;
  tls?: TlsClientOptions;
  /** Retries of the failed items inside one delivery before the whole batch goes back to the runner. */
  itemRetries?: number;
}

interface BulkItemResult {
  status: number;
  error?: { type?: string; reason?: string };
}

/**
 * `_bulk` with NDJSON bodies (https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html):
 * one `index` action per event with `_id` = event id, so a retry overwrites instead of duplicating. The reply is
 * per item; only failed items are sent again (429 and 5xx are transient, others are reported as errors).
 */
export function elasticsearchExporter(o: ElasticsearchOptions): Exporter {
  const endpoint = new URL('/_bulk', o.url).toString();
  const index = o.index ?? 'pgwarden-audit';
  const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
  if (o.authorization) headers.authorization = o.authorization;
  return {
    name: o.name ?? 'elasticsearch',
    async deliver(events: readonly AuditEvent[]) {
      let pending = [...events];
      for (let attempt = 0; pending.length > 0; attempt++) {
        const body = `${pending.map((e) => `${JSON.stringify({ index: { _index: index, _id: e.id } })}\n${JSON.stringify(toEcs(e))}`).join('\n')}\n`;
        const r = await post(endpoint, body, headers, o.tls);
        if (r.status !== 200)
          throw new CollectorError('COLLECTOR_EXPORT', `_bulk answered ${r.status}: ${r.body.slice(0, 200)}`);
        const reply = JSON.parse(r.body) as { errors?: boolean; items?: Record<string, BulkItemResult>[] };
        if (!reply.errors) return;
        const items = reply.items ?? [];
        if (items.length !== pending.length)
          throw new CollectorError(
            'COLLECTOR_EXPORT',
            `_bulk returned ${items.length} results for ${pending.length} items`,
          );
        const failed = pending.filter((_, i) => {
          const res = Object.values(items[i])[0];
          return !res || res.status >= 300;
        });
        const permanent = failed.filter((_, i) => {
          const res = Object.values(items[pending.indexOf(failed[i])])[0];
          return res && res.status !== 429 && res.status < 500;
        });
        if (permanent.length > 0) {
          const res = Object.values(items[pending.indexOf(permanent[0])])[0];
          throw new CollectorError(
            'COLLECTOR_EXPORT',
            `_bulk refused ${permanent.length} documents (${res?.status} ${res?.error?.type ?? ''}: ${res?.error?.reason ?? ''})`,
          );
        }
        if (attempt >= (o.itemRetries ?? 5))
          throw new CollectorError(
            'COLLECTOR_EXPORT',
            `${failed.length} documents still failing after ${attempt + 1} attempts`,
          );
        pending = failed;
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    },
    close: async () => {},
  };
}
