import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { frontendLimit, LARGE_MESSAGE_LIMIT } from './codes.js';
import { ProtocolError } from './errors.js';
import { DROP, Framer, type FramerHandler, PASS, SCAN, WHOLE } from './framer.js';
import {
  BindNameScanner,
  decodeQuery,
  parseStartupPacket,
  queryMessage,
  sslRequest,
  startupMessage,
  syncMessage,
} from './frontend-messages.js';

/** A handler that takes Query messages whole, passes the rest and records what it saw. */
function recorder(opts: { dropType?: number } = {}) {
  const seen: string[] = [];
  const passed: Buffer[] = [];
  let framer!: Framer;
  const h: FramerHandler = {
    limit: (t) => frontendLimit(t, 1 << 20),
    header: (t) => (t === opts.dropType ? DROP : t === 0x51 ? WHOLE : PASS),
    whole(t, buf, s, e) {
      seen.push(`${String.fromCharCode(t)}:${decodeQuery(buf, s, e)}`);
      return true;
    },
    pass: (buf, s, e) => void passed.push(Buffer.from(buf.subarray(s, e))),
    startup(buf, s, e) {
      const p = parseStartupPacket(buf, s, e);
      seen.push(p.kind === 'startup' ? `startup:${p.params.user}` : p.kind);
      if (p.kind === 'ssl') framer.startup = true;
    },
    dropped: (t) => void seen.push(`dropped:${String.fromCharCode(t)}`),
  };
  framer = new Framer(h, { startup: true });
  return { framer, seen, out: () => Buffer.concat(passed) };
}

const bind = Buffer.concat([Buffer.from([0x42, 0, 0, 0, 12]), Buffer.from('\0\0\0\0\0\0\0\0')]);
const stream = Buffer.concat([
  sslRequest(),
  startupMessage({ user: 'alice', database: 'db' }),
  queryMessage('SELECT 1'),
  bind,
  queryMessage('SELECT 2; SELECT 3'),
  syncMessage(),
]);
const expectedSeen = ['ssl', 'startup:alice', 'Q:SELECT 1', 'Q:SELECT 2; SELECT 3'];
// Forwarded bytes: everything after the startup packets, since whole messages are forwarded as they were.
const expectedOut = stream.subarray(sslRequest().length + startupMessage({ user: 'alice', database: 'db' }).length);

describe('Framer', () => {
  it('frames a whole stream in one chunk, forwarding untouched runs as one span', () => {
    const r = recorder();
    r.framer.push(stream);
    expect(r.seen).toEqual(expectedSeen);
    expect(r.out().equals(expectedOut)).toBe(true);
  });

  it('gives the same result split at every offset', () => {
    for (let i = 1; i < stream.length; i++) {
      const r = recorder();
      r.framer.push(stream.subarray(0, i));
      r.framer.push(stream.subarray(i));
      expect(r.seen, `split at ${i}`).toEqual(expectedSeen);
      expect(r.out().equals(expectedOut), `split at ${i}`).toBe(true);
    }
  });

  it('gives the same result byte by byte', () => {
    const r = recorder();
    for (let i = 0; i < stream.length; i++) r.framer.push(stream.subarray(i, i + 1));
    expect(r.seen).toEqual(expectedSeen);
    expect(r.out().equals(expectedOut)).toBe(true);
  });

  it('streams a large PASS message in pieces without assembling it', () => {
    const big = Buffer.alloc(5 + 3_000_000, 7);
    big[0] = 0x64; // CopyData
    big.writeInt32BE(big.length - 1, 1);
    const h: FramerHandler = {
      limit: () => LARGE_MESSAGE_LIMIT,
      header: () => PASS,
      whole: () => true,
      pass: (_b, s, e) => pieces.push(e - s),
    };
    const pieces: number[] = [];
    const f = new Framer(h);
    for (let i = 0; i < big.length; i += 65536) f.push(big.subarray(i, i + 65536));
    expect(pieces.reduce((a, b) => a + b, 0)).toBe(big.length);
    expect(Math.max(...pieces)).toBeLessThanOrEqual(65536);
  });

  it('drops a message and reports it once it is consumed', () => {
    const r = recorder({ dropType: 0x42 });
    for (let i = 0; i < stream.length; i++) r.framer.push(stream.subarray(i, i + 1));
    expect(r.seen).toEqual(['ssl', 'startup:alice', 'Q:SELECT 1', 'dropped:B', 'Q:SELECT 2; SELECT 3']);
  });

  it('suspends after a message and resumes with the queued input in order', () => {
    const order: string[] = [];
    let framer!: Framer;
    framer = new Framer({
      limit: () => 1000,
      header: (t) => (t === 0x51 ? WHOLE : PASS),
      whole(_t, b, s, e) {
        order.push(decodeQuery(b, s, e));
        framer.suspend();
        return true;
      },
      pass: (_b, s, e) => void order.push(`pass:${e - s}`),
    });
    framer.push(Buffer.concat([queryMessage('a'), syncMessage(), queryMessage('b')]));
    expect(order).toEqual(['a', 'pass:7']);
    framer.push(syncMessage());
    framer.resume();
    // The Sync and the forwarded Query 'b' leave as one span, flushed when 'b' suspends the framer again.
    expect(order).toEqual(['a', 'pass:7', 'b', 'pass:12']);
    framer.resume();
    expect(order).toEqual(['a', 'pass:7', 'b', 'pass:12', 'pass:5']);
  });

  it('rejects a startup packet over 10000 bytes and an unknown message type', () => {
    const r = recorder();
    const len = Buffer.alloc(8);
    len.writeInt32BE(10001, 0);
    expect(() => r.framer.push(len)).toThrow(ProtocolError);
    const r2 = recorder();
    r2.framer.push(startupMessage({ user: 'u' }));
    expect(() => r2.framer.push(Buffer.from([0x21, 0, 0, 0, 4]))).toThrow(/invalid message type/);
  });

  it('rejects lengths below 4 and above the type limit', () => {
    const r = recorder();
    r.framer.push(startupMessage({ user: 'u' }));
    expect(() => r.framer.push(Buffer.from([0x53, 0, 0, 0, 3]))).toThrow(/invalid message length/);
    const r2 = recorder();
    r2.framer.push(startupMessage({ user: 'u' }));
    expect(() => r2.framer.push(Buffer.from([0x53, 0, 0, 0x30, 0]))).toThrow(/invalid message length/); // Sync > 10000
  });

  it('never crashes or hangs on random bytes (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 16 }), fc.boolean(), (chunks, startup) => {
        const h: FramerHandler = {
          limit: (t) => frontendLimit(t, 1 << 16),
          header: (t) => (t === 0x51 || t === 0x50 ? WHOLE : PASS),
          whole: (t, b, s, e) => {
            if (t === 0x51) decodeQuery(b, s, e);
            return true;
          },
          pass: () => {},
          startup: (b, s, e) => void parseStartupPacket(b, s, e),
        };
        const f = new Framer(h, { startup });
        const t0 = performance.now();
        for (const c of chunks) {
          try {
            f.push(Buffer.from(c));
          } catch (err) {
            expect(err).toBeInstanceOf(ProtocolError);
            break;
          }
        }
        expect(performance.now() - t0).toBeLessThan(200);
      }),
      { numRuns: 3000 },
    );
  });

  it('frames random valid message sequences identically however they are chunked (fast-check)', () => {
    const msg = fc.oneof(
      fc.string({ maxLength: 40 }).map((s) => queryMessage(s.replace(/\0/g, ''))),
      fc.constant(syncMessage()),
      fc.uint8Array({ maxLength: 300 }).map((b) => {
        const m = Buffer.alloc(5 + b.length);
        m[0] = 0x64;
        m.writeInt32BE(4 + b.length, 1);
        Buffer.from(b).copy(m, 5);
        return m;
      }),
    );
    fc.assert(
      fc.property(
        fc.array(msg, { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 30 }),
        (msgs, cuts) => {
          const all = Buffer.concat([startupMessage({ user: 'u' }), ...msgs]);
          const a = recorder();
          a.framer.push(all);
          const b = recorder();
          let pos = 0;
          for (let i = 0; pos < all.length; i++) {
            const n = cuts[i % cuts.length];
            b.framer.push(all.subarray(pos, pos + n));
            pos += n;
          }
          expect(b.seen).toEqual(a.seen);
          expect(b.out().equals(a.out())).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('Framer SCAN: a message passed while the handler reads its first pieces', () => {
  const longBind = Buffer.concat([
    Buffer.from([0x42, 0, 0, 0, 0]),
    Buffer.from(`${'p'.repeat(70_000)}\0${'s'.repeat(5000)}\0`),
    Buffer.alloc(6),
  ]);
  longBind.writeInt32BE(longBind.length - 1, 1);
  const input = Buffer.concat([longBind, queryMessage('SELECT 1'), syncMessage()]);

  it('shows the pieces in order until the scanner has the names, forwards every byte, at any split', () => {
    for (const size of [1, 7, 4096, 65_536, input.length]) {
      const passed: Buffer[] = [];
      const names: (string | null)[] = [];
      let scanner = new BindNameScanner();
      const h: FramerHandler = {
        limit: (t) => frontendLimit(t, 1 << 20),
        header: (t) => (t === 0x42 ? SCAN : t === 0x51 ? WHOLE : PASS),
        whole: () => true,
        pass: (buf, s, e) => void passed.push(Buffer.from(buf.subarray(s, e))),
        scan(buf, s, e) {
          const n = scanner.push(buf, s, e);
          if (n === null) return false;
          names.push(n.portal, n.statement);
          scanner = new BindNameScanner();
          return true;
        },
      };
      const f = new Framer(h);
      for (let i = 0; i < input.length; i += size) f.push(input.subarray(i, i + size));
      expect(names).toEqual(['p'.repeat(63), 's'.repeat(63)]);
      expect(Buffer.concat(passed).equals(input)).toBe(true);
    }
  });
});
