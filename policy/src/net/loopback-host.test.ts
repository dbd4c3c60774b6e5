import { describe, expect, it } from 'vitest';
import { isLoopbackHost } from './loopback-host.js';

describe('isLoopbackHost', () => {
  it('knows loopback addresses', () => {
    for (const h of [undefined, 'localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]', '::ffff:127.0.0.1'])
      expect(isLoopbackHost(h), String(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', 'collector.example', '128.0.0.1', '::ffff:10.0.0.1'])
      expect(isLoopbackHost(h), h).toBe(false);
  });
});
