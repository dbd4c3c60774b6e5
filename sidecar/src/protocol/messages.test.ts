import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RowField } from '../proxy/hooks.js';
import {
  backendKeyData,
  commandComplete,
  dataRow,
  decodeCString,
  decodeErrorFields,
  decodeNotification,
  decodeParameterStatus,
  decodeRowDescription,
  encodeErrorFields,
  errorResponse,
  notificationResponse,
  parameterStatus,
  readyForQuery,
  rowDescription,
} from './backend-messages.js';
import { MalformedBody, ProtocolError } from './errors.js';
import {
  cancelRequest,
  decodeBindNames,
  decodeBindValues,
  decodeExecute,
  decodeFunctionCall,
  decodeParse,
  decodeQuery,
  decodeTarget,
  executeMessage,
  failingLike,
  parseMessage,
  parseStartupPacket,
  queryMessage,
  sslRequest,
  startupMessage,
  trackedName,
} from './frontend-messages.js';

const whole = (b: Buffer) => [b, 0, b.length] as const;

describe('backend messages', () => {
  it('builds ErrorResponse/NoticeResponse with every field and decodes them back', () => {
    const b = errorResponse({
      severity: 'ERROR',
      code: '42501',
      message: 'denied',
      detail: 'd',
      hint: 'h',
      position: 7,
    });
    expect(b[0]).toBe(0x45);
    expect(b.readInt32BE(1)).toBe(b.length - 1);
    const f = decodeErrorFields(...whole(b));
    expect(Object.fromEntries(f)).toEqual({ S: 'ERROR', V: 'ERROR', C: '42501', M: 'denied', D: 'd', H: 'h', P: '7' });
    expect(
      encodeErrorFields(0x4e, f)
        .subarray(1)
        .equals(
          errorResponse(
            { severity: 'ERROR', code: '42501', message: 'denied', detail: 'd', hint: 'h', position: 7 },
            true,
          ).subarray(1),
        ),
    ).toBe(true);
  });

  it('rejects an unterminated error field', () => {
    const b = Buffer.from([0x45, 0, 0, 0, 7, 0x4d, 0x61, 0x62]);
    expect(() => decodeErrorFields(...whole(b))).toThrow(ProtocolError);
  });

  it('round-trips RowDescription, DataRow, ParameterStatus, CommandComplete, notifications', () => {
    const fields: RowField[] = [
      { name: 'id', tableOid: 16384, columnAttr: 1, typeOid: 23, typeSize: 4, typeModifier: -1, format: 0 },
      { name: 'émail', tableOid: 16384, columnAttr: 2, typeOid: 25, typeSize: -1, typeModifier: -1, format: 1 },
    ];
    expect(decodeRowDescription(...whole(rowDescription(fields)))).toEqual(fields);
    const row = dataRow(['1', null, '']);
    expect(row.readInt16BE(5)).toBe(3);
    expect(row.readInt32BE(7)).toBe(1);
    expect(row.readInt32BE(12)).toBe(-1);
    expect(row.readInt32BE(16)).toBe(0);
    expect(decodeParameterStatus(...whole(parameterStatus('TimeZone', 'UTC')))).toEqual(['TimeZone', 'UTC']);
    expect(decodeCString(...whole(commandComplete('INSERT 0 5')))).toBe('INSERT 0 5');
    expect(decodeNotification(...whole(notificationResponse(42, 'ch', 'pay')))).toEqual({
      pid: 42,
      channel: 'ch',
      payload: 'pay',
    });
    expect([...readyForQuery('T')]).toEqual([0x5a, 0, 0, 0, 5, 0x54]);
    expect(backendKeyData(1, -2).readInt32BE(9)).toBe(-2);
  });
});

describe('frontend messages', () => {
  it('decodeBindValues: text, binary (as \\x hex) and NULL values, per-parameter or shared format codes', () => {
    const i16 = (n: number) => Buffer.from([n >> 8, n & 255]);
    const i32 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeInt32BE(n);
      return b;
    };
    const bind = (formats: number[], values: (Buffer | null)[]) => {
      const body = Buffer.concat([
        Buffer.from('p\0s\0'),
        i16(formats.length),
        ...formats.map(i16),
        i16(values.length),
        ...values.map((v) => (v === null ? i32(-1) : Buffer.concat([i32(v.length), v]))),
        i16(0),
      ]);
      return Buffer.concat([Buffer.from('B'), i32(body.length + 4), body]);
    };
    expect(decodeBindValues(...whole(bind([], [Buffer.from('200'), null])))).toEqual({
      portal: 'p',
      values: ['200', null],
      formats: ['text', 'text'],
    });
    expect(decodeBindValues(...whole(bind([0, 1], [Buffer.from('é'), Buffer.from([0, 1, 255])])))).toEqual({
      portal: 'p',
      values: ['é', '\\x0001ff'],
      formats: ['text', 'binary'],
    });
    // A text value that reads like hex is told apart from a binary one by its format, not its text.
    expect(decodeBindValues(...whole(bind([0, 1], [Buffer.from('\\x41'), Buffer.from('A')])))).toMatchObject({
      values: ['\\x41', '\\x41'],
      formats: ['text', 'binary'],
    });
    expect(decodeBindValues(...whole(bind([1], [Buffer.from([7]), Buffer.from([8])]))).values).toEqual([
      '\\x07',
      '\\x08',
    ]);
    const truncated = bind([], [Buffer.from('200')]).subarray(0, 17); // inside the value
    expect(() => decodeBindValues(truncated, 0, truncated.length)).toThrow(ProtocolError);
  });

  it('parses startup packets of every kind', () => {
    expect(parseStartupPacket(...whole(sslRequest()))).toEqual({ kind: 'ssl' });
    expect(parseStartupPacket(...whole(cancelRequest(7, -9)))).toEqual({ kind: 'cancel', processId: 7, secretKey: -9 });
    const p = parseStartupPacket(...whole(startupMessage({ user: 'u', database: 'd', application_name: 'ä' })));
    expect(p).toEqual({
      kind: 'startup',
      major: 3,
      minor: 0,
      params: { user: 'u', database: 'd', application_name: 'ä' },
    });
  });

  it('refuses protocol 2, missing terminators and a malformed cancel', () => {
    const v2 = startupMessage({ user: 'u' });
    v2.writeInt32BE(2 << 16, 4);
    expect(() => parseStartupPacket(...whole(v2))).toThrow(/unsupported frontend protocol 2\.0/);
    const noTerm = startupMessage({ user: 'u' }).subarray(0, -1);
    noTerm.writeInt32BE(noTerm.length, 0);
    expect(() => parseStartupPacket(...whole(noTerm))).toThrow(ProtocolError);
    const badCancel = Buffer.concat([cancelRequest(1, 2), Buffer.alloc(4)]);
    badCancel.writeInt32BE(20, 0);
    expect(() => parseStartupPacket(...whole(badCancel))).toThrow(/cancel request/);
  });

  it('decodes Query, Parse, Bind names (from a prefix), Describe/Close and Execute', () => {
    expect(decodeQuery(...whole(queryMessage('SELECT 1')))).toBe('SELECT 1');
    expect(decodeParse(...whole(parseMessage('s1', 'SELECT $1')))).toEqual({ name: 's1', sql: 'SELECT $1' });
    const bind = Buffer.from([0x42, 0, 0, 0, 20, ...Buffer.from('p1\0s1\0'), 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(decodeBindNames(bind, 0, bind.length)).toEqual({ portal: 'p1', statement: 's1' });
    expect(decodeBindNames(bind, 0, 9)).toBeNull();
    const describe = Buffer.from([0x44, 0, 0, 0, 8, 0x53, ...Buffer.from('s1\0')]);
    expect(decodeTarget(...whole(describe))).toEqual({ kind: 'S', name: 's1' });
    describe[5] = 0x51;
    expect(() => decodeTarget(...whole(describe))).toThrow(ProtocolError);
    expect(decodeExecute(...whole(executeMessage('p', 10)))).toEqual({ portal: 'p', maxRows: 10 });
    expect(() => decodeQuery(...whole(Buffer.from([0x51, 0, 0, 0, 5, 0x41])))).toThrow('invalid string in message');
  });
});

describe('names PostgreSQL keys as the proxy does', () => {
  it('only ASCII names: a non-ASCII one may be converted, and so cut or matched, differently upstream', () => {
    const key = (bytes: number[]) => Buffer.from(bytes).toString('latin1');
    expect(trackedName('x'.repeat(63))).toBe(true);
    expect(trackedName('S_1')).toBe(true);
    expect(trackedName(key([0x70, 0xe9]))).toBe(false);
    expect(trackedName(`${'x'.repeat(56)}\xe9\xe9`)).toBe(false);
    expect(trackedName(key([0xc3, 0xa9]))).toBe(false);
  });
});

describe('malformed bodies, read as PostgreSQL reads them', () => {
  const msgOf = (type: string, ...body: (string | number[])[]) => {
    const b = Buffer.concat(body.map((x) => (typeof x === 'string' ? Buffer.from(x, 'latin1') : Buffer.from(x))));
    const head = Buffer.from([type.charCodeAt(0), 0, 0, 0, 0]);
    head.writeInt32BE(4 + b.length, 1);
    return Buffer.concat([head, b]);
  };
  const decoders: Record<string, (b: Buffer, s: number, e: number) => unknown> = {
    Q: decodeQuery,
    P: decodeParse,
    D: decodeTarget,
    C: decodeTarget,
    E: decodeExecute,
    F: decodeFunctionCall,
  };
  const faultOf = (b: Buffer): MalformedBody | undefined => {
    try {
      decoders[String.fromCharCode(b[0])](b, 0, b.length);
      return undefined;
    } catch (err) {
      if (err instanceof MalformedBody) return err;
      throw err;
    }
  };
  // Each with the message PostgreSQL 15 answers (checked against a real server by differential.test.ts).
  const cases: [Buffer, string][] = [
    [msgOf('Q', 'SELECT 1'), 'invalid string in message'],
    [msgOf('Q'), 'invalid string in message'],
    [msgOf('Q', 'SELECT 1\0x'), 'invalid message format'],
    [msgOf('P', 'name'), 'invalid string in message'],
    [msgOf('P', 'n\0SELECT 1'), 'invalid string in message'],
    [msgOf('P', 'n\0SELECT 1\0', [0]), 'insufficient data left in message'],
    [msgOf('P', 'n\0SELECT 1\0', [0, 2, 0, 0, 0, 23]), 'insufficient data left in message'],
    [msgOf('P', 'n\0SELECT 1\0', [0xff, 0xff]), 'insufficient data left in message'],
    [msgOf('P', 'n\0SELECT 1\0', [0, 0], 'x'), 'invalid message format'],
    [msgOf('D'), 'no data left in message'],
    [msgOf('D', 'S'), 'invalid string in message'],
    [msgOf('D', 'Xname'), 'invalid string in message'],
    [msgOf('D', 'S\0x'), 'invalid message format'],
    [msgOf('D', 'X\0'), 'invalid DESCRIBE message subtype 88'],
    [msgOf('C', 'Z\0'), 'invalid CLOSE message subtype 90'],
    [msgOf('C', [0, 0]), 'invalid CLOSE message subtype 0'],
    [msgOf('E', 'portal'), 'invalid string in message'],
    [msgOf('E', '\0', [0, 0, 0]), 'insufficient data left in message'],
    [msgOf('E', '\0', [0, 0, 0, 0], 'x'), 'invalid message format'],
    [msgOf('F', [0, 0, 1]), 'insufficient data left in message'],
  ];

  it.each(cases)("%# stops where PostgreSQL's reading stops, with its message", (b, message) => {
    expect(faultOf(b)?.message).toBe(message);
  });

  it.each(cases)('%# has a substitute that fails at the same step and carries no byte of it', (b, message) => {
    const e = faultOf(b)!;
    const sub = failingLike(e);
    expect(sub[0]).toBe(b[0]);
    expect(sub.readInt32BE(1)).toBe(sub.length - 1);
    expect(faultOf(sub)?.message).toBe(message);
    expect(sub.length).toBeLessThanOrEqual(11);
  });

  it('reads well-formed bodies whole: parameter types, a zero OID count, a 0xffff row limit', () => {
    const oids = msgOf('P', 'n\0SELECT $1, $2\0', [0, 2, 0, 0, 0, 23, 0, 0, 0, 25]);
    expect(decodeParse(oids, 0, oids.length)).toEqual({ name: 'n', sql: 'SELECT $1, $2' });
    const exec = msgOf('E', 'p\0', [0xff, 0xff, 0xff, 0xff]);
    expect(decodeExecute(exec, 0, exec.length)).toEqual({ portal: 'p', maxRows: -1 });
    expect(decodeTarget(...whole(msgOf('C', 'P\0')))).toEqual({ kind: 'P', name: '' });
  });

  it('random bodies: decoded, or MalformedBody whose substitute fails the same way; never another error', () => {
    fc.assert(
      fc.property(fc.constantFrom(...'QPDCEF'), fc.uint8Array({ maxLength: 24 }), (type, body) => {
        const b = msgOf(type, [...body]);
        const e = faultOf(b);
        if (e !== undefined) expect(faultOf(failingLike(e))?.message).toBe(e.message);
      }),
      { numRuns: 2000 },
    );
  });
});
