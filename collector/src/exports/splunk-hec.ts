import { CollectorError } from '../errors.js';
import type { AuditEvent } from '../event.js';
import type { Exporter } from './export-runner.js';
import { post, type TlsClientOptions } from './http-post.js';

export interface SplunkHecOptions {
  name?: string;
  /** Base URL of the HEC endpoint, e.g. https://splunk:8088 */
  url: string;
  token: string;
  index?: string;
  sourcetype?: string;
  tls?: TlsClientOptions;
}

/**
 * Splunk HTTP Event Collector: one POST to /services/collector/event carrying the batch as concatenated JSON
 * objects, `Authorization: Splunk <token>`
 * (https://docs.splunk.com/Documentation/Splunk/latest/Data/HECRESTendpoints). HEC answers 200 only when it
 * accepted the whole batch; anything else is retried by the runner, and a retried batch is a duplicate at worst.
 */
export function splunkHecExporter(o: SplunkHecOptions): Exporter {
  const endpoint = new URL('/services/collector/event', o.url).toString();
  return {
    name: o.name ?? 'splunk-hec',
    async deliver(events: readonly AuditEvent[]) {
      const body = events
        .map((e) =>
          JSON.stringify({
            time: Date.parse(e.time) / 1000,
            host: (e.source as { pod?: string } | undefined)?.pod ?? e.identity?.pod,
            source: 'pgwarden',
            sourcetype: o.sourcetype ?? 'pgwarden:audit',
            ...(o.index ? { index: o.index } : {}),
            event: e,
          }),
        )
        .join('\n');
      const r = await post(
        endpoint,
        body,
        { authorization: `Splunk ${o.token}`, 'content-type': 'application/json' },
        o.tls,
      );
      if (r.status !== 200) {
        // The reply text is Splunk's own ({"text":"Invalid token","code":4}); it never echoes the token.
        throw new CollectorError('COLLECTOR_EXPORT', `Splunk HEC answered ${r.status}: ${r.body.slice(0, 200)}`);
      }
    },
    close: async () => {},
  };
}
