import { describe, expect, it } from 'vitest';
import { clientAddress, rateKey, trustedProxies } from './client-address.js';

describe('the client address sign-ins are counted against', () => {
  const trusted = trustedProxies(['10.0.0.0/8', 'fd00::1']);

  it('is the peer unless the peer is a trusted proxy; then the right-most hop it did not append itself', () => {
    expect(clientAddress('::ffff:192.0.2.7', '198.51.100.1', trusted)).toBe('192.0.2.7');
    expect(clientAddress('192.0.2.7', '198.51.100.1', undefined)).toBe('192.0.2.7');
    expect(clientAddress('10.1.2.3', '6.6.6.6, 198.51.100.1', trusted)).toBe('198.51.100.1');
    expect(clientAddress('10.1.2.3', ['6.6.6.6, 198.51.100.1', '10.4.4.4'], trusted)).toBe('198.51.100.1');
    expect(clientAddress('fd00::1', '2001:db8::5 , 10.0.0.2', trusted)).toBe('2001:db8::5');
    // Only proxies all the way: the left-most of them. Garbage: the last address that was believed.
    expect(clientAddress('10.1.2.3', '10.0.0.9, 10.0.0.2', trusted)).toBe('10.0.0.9');
    expect(clientAddress('10.1.2.3', 'evil, 10.0.0.2', trusted)).toBe('10.0.0.2');
    expect(clientAddress('10.1.2.3', undefined, trusted)).toBe('10.1.2.3');
  });

  it('counts an IPv6 client by its /64, an IPv4 one by its address', () => {
    expect(rateKey('203.0.113.9')).toBe('203.0.113.9');
    for (const a of ['2001:db8:1:2::1', '2001:0db8:0001:0002:ffff:1:2:3', '2001:db8:1:2:3:4:1.2.3.4'])
      expect(rateKey(a), a).toBe('2001:db8:1:2::/64');
    expect(rateKey('2001:db8::7:8:1.2.3.4')).toBe('2001:db8:0:0::/64');
    expect(rateKey('::1')).toBe('0:0:0:0::/64');
    expect(rateKey('fe80:1::')).toBe('fe80:1:0:0::/64');
  });

  it('refuses a trusted proxy that is not an address or range', () => {
    for (const bad of ['ingress.local', '10.0.0.0/33', '10.0.0.1/8/8', '::1/129'])
      expect(() => trustedProxies([bad]), bad).toThrow(/not an IP address or CIDR range/);
  });
});
