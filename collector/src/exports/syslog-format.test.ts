import { describe, expect, it } from 'vitest';
import { makeSession } from '../testing/audit-events.js';
import { formatSyslog, frameOctetCounting, parseOctetCounting } from './syslog-format.js';

describe('RFC 5424 formatting and RFC 6587 octet counting', () => {
  const events = makeSession({ id: 'sys "1"]', statements: 2, user: 'zoë' });
  const messages = events.map((e) => formatSyslog(e, { hostname: 'host with space' }));

  it('escapes SD parameter values and keeps header fields printable ASCII', () => {
    expect(messages[1]).toMatch(
      /^<109>1 2026-11-30T12:00:00\.001000Z host_with_space pgwarden - statement \[pgwarden@32473 session="sys \\"1\\"\\]" seq="2" /,
    );
    expect(messages[1]).toContain('identity="zoë"');
  });

  it('counts octets, not characters, and reassembles frames split at every offset', () => {
    const stream = Buffer.concat(messages.map(frameOctetCounting));
    for (let cut = 0; cut <= stream.length; cut++) {
      const first = parseOctetCounting(stream.subarray(0, cut));
      const second = parseOctetCounting(Buffer.concat([first.rest, stream.subarray(cut)]));
      expect([...first.messages, ...second.messages]).toEqual(messages);
      expect(second.rest.length).toBe(0);
    }
  });

  it('writes a time that is not RFC 3339 from its parsed value: text in it cannot pose as header fields', () => {
    // Date.parse reads this (a parenthesised comment is ignored), so the collector stores it.
    const [e] = makeSession({ id: 's', statements: 0 });
    const forged = { ...e, time: 'Jan 1 2026 00:00:00 GMT (evil.example sshd - - [origin ip="10.0.0.1"])' };
    expect(formatSyslog(forged)).toMatch(
      /^<110>1 2026-01-01T00:00:00\.000Z - pgwarden - session\.start \[pgwarden@32473 /,
    );
    expect(formatSyslog({ ...e, time: 'not a time' })).toMatch(/^<110>1 - - pgwarden - /);
  });

  it('rejects a frame whose length is not a number', () => {
    expect(() => parseOctetCounting(Buffer.from('abc <14>1 -'))).toThrow(/bad octet count/);
  });
});
