import { isIP } from 'node:net';

/**
 * Whether a listen host only accepts connections from this machine (or pod): 127.0.0.0/8, ::1 (also as an IPv4-mapped
 * address), `localhost`, or no host at all (the listeners' default is 127.0.0.1). The sidecar's client listener and
 * the collector's open API are only allowed there.
 */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined || host === 'localhost') return true;
  const h = host.replace(/^\[|\]$/g, '');
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./i.test(h);
  return false;
}
