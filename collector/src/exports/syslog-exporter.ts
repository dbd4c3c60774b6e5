import { isIP, connect as netConnect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { CollectorError } from '../errors.js';
import type { AuditEvent } from '../event.js';
import type { Exporter } from './export-runner.js';
import { formatSyslog, frameOctetCounting, type SyslogFormatOptions } from './syslog-format.js';

export interface SyslogOptions extends SyslogFormatOptions {
  name?: string;
  host: string;
  port: number;
  /** TLS transport (RFC 5425); `ca` pins the receiver's issuer. */
  tls?: { ca?: string; servername?: string; rejectUnauthorized?: boolean };
  timeoutMs?: number;
}

/**
 * Syslog over TCP or TLS. Syslog has no application-level acknowledgement (RFC 6587 §3.4), so a batch counts
 * as delivered once the kernel accepted every byte (the write callback fired) on a connection that did not fail
 * meanwhile; on any socket error the connection is rebuilt and the whole batch is sent again. What a receiver
 * loses after accepting bytes cannot be detected by this protocol — use HEC or `_bulk` where that matters.
 */
export function syslogExporter(o: SyslogOptions): Exporter {
  let socket: Socket | null = null;
  let broken: Error | null = null;
  const fmt: SyslogFormatOptions = { ...o, hostname: o.hostname ?? hostname() };

  const open = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = o.tls
        ? tlsConnect({
            host: o.host,
            port: o.port,
            ca: o.tls.ca,
            servername: o.tls.servername ?? (isIP(o.host) ? undefined : o.host),
            rejectUnauthorized: o.tls.rejectUnauthorized ?? true,
          })
        : netConnect({ host: o.host, port: o.port });
      const onError = (err: Error) => {
        s.destroy();
        reject(err);
      };
      s.once('error', onError);
      s.setTimeout(o.timeoutMs ?? 15_000, () => s.destroy(new Error('syslog connection timed out')));
      s.once(o.tls ? 'secureConnect' : 'connect', () => {
        s.off('error', onError);
        s.setTimeout(0);
        broken = null;
        s.on('error', (err) => {
          broken = err;
        });
        s.on('close', () => {
          broken ??= new Error('syslog connection closed by the receiver');
          if (socket === s) socket = null;
        });
        resolve(s);
      });
    });

  return {
    name: o.name ?? (o.tls ? 'syslog-tls' : 'syslog-tcp'),
    async deliver(events: readonly AuditEvent[]) {
      if (!socket || broken) {
        socket?.destroy();
        socket = await open();
      }
      const s = socket;
      const payload = Buffer.concat(events.map((e) => frameOctetCounting(formatSyslog(e, fmt))));
      // A receiver that accepts but stops reading never lets the write complete (nor errs: TCP keeps the
      // connection): without a bound the exporter would wait forever, its failure and lag metrics frozen.
      const limit = o.timeoutMs ?? 15_000;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          socket = null;
          s.destroy();
          reject(
            new CollectorError(
              'COLLECTOR_EXPORT',
              `syslog write timed out after ${limit} ms: the receiver is not reading; reconnecting`,
            ),
          );
        }, limit);
        s.write(payload, (err) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        });
      });
      if (broken || s.destroyed) {
        socket = null;
        throw new CollectorError(
          'COLLECTOR_EXPORT',
          `syslog connection failed during delivery: ${(broken as Error | null)?.message ?? 'closed'}`,
        );
      }
    },
    async close() {
      const s = socket;
      socket = null;
      if (!s) return;
      await new Promise<void>((r) => {
        const timer = setTimeout(() => s.destroy(), o.timeoutMs ?? 15_000);
        s.end(() => {
          clearTimeout(timer);
          r();
        });
        s.once('close', () => {
          clearTimeout(timer);
          r();
        });
      });
    },
  };
}
