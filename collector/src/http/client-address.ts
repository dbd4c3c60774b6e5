import { BlockList, isIP } from 'node:net';
import { CollectorError } from '../errors.js';

/**
 * The proxies (`--trusted-proxy`: addresses or CIDR ranges, e.g. an ingress controller's pods) whose
 * `X-Forwarded-For` is believed. Without any, the header is ignored: anyone can write it, so believing it would let
 * a client pick the address its sign-ins are counted against.
 */
export function trustedProxies(entries: readonly string[] | undefined): BlockList | undefined {
  if (!entries?.length) return undefined;
  const list = new BlockList();
  for (const entry of entries) {
    const [addr = '', bits, extra] = entry.trim().split('/');
    const family = isIP(addr);
    const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
    if (!family || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32))
      throw new CollectorError('COLLECTOR_BAD_CONFIG', `--trusted-proxy ${entry}: not an IP address or CIDR range`);
    list.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}

const familyOf = (a: string) => (isIP(a) === 6 ? 'ipv6' : 'ipv4');
const unmapped = (a: string) => (a.toLowerCase().startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a);

/**
 * The address a request came from: the peer's, or, when the peer is a trusted proxy, the right-most address in
 * `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it saw, so the entries left of the
 * first untrusted one were written by the client and prove nothing).
 */
export function clientAddress(
  peer: string | undefined,
  forwardedFor: string | string[] | undefined,
  trusted: BlockList | undefined,
): string {
  let addr = unmapped(peer ?? '');
  if (!trusted || !isIP(addr) || !trusted.check(addr, familyOf(addr))) return addr;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : (forwardedFor ?? '')).split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = unmapped((hops[i] ?? '').trim());
    if (!hop) continue;
    // Not an address (a port, a name, garbage): whatever wrote it, nothing left of it can be believed.
    if (!isIP(hop)) return addr;
    addr = hop;
    if (!trusted.check(hop, familyOf(hop))) return hop;
  }
  return addr;
}

/**
 * What sign-ins are counted against: the IPv4 address, or the IPv6 /64 (one subscriber routinely holds a whole /64,
 * so counting single IPv6 addresses would give an attacker 2^64 budgets).
 */
export function rateKey(address: string): string {
  if (isIP(address) !== 6) return address;
  const [head = '', tail] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  // An embedded IPv4 tail (::1.2.3.4) sits in the last 64 bits: it never reaches the prefix.
  const rightGroups = right.length + (right.at(-1)?.includes('.') ? 1 : 0);
  const groups =
    tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - rightGroups)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || '0', 16).toString(16))
    .join(':')}::/64`;
}
