import * as zlib from 'node:zlib';
import { auditSubject, hashEvent } from '@pgwarden/policy';
import { messageId } from './message-id.js';

/**
 * One record of the disk spool as a line: `<subject>\t<msgID>\t<event JSON>\t<crc>\n`, where `<crc>` is the CRC-32
 * (8 lowercase hex digits) of the UTF-8 bytes before its tab. JSON text never holds a raw tab or newline, and subjects
 * and message ids are sanitised of them, so a line has exactly three tabs. The checksum is what tells a record from a
 * line the disk damaged: without it, damage that left both tabs in place (a flipped byte in the JSON, a block of
 * another file) read as a record and was published as if it were an event.
 *
 * Builds before the checksum wrote `<subject>\t<msgID>\t<event JSON>\n`, and a spool outlives the container that
 * wrote it (an emptyDir survives a restart into a new image). Such a line is taken when its event checks out by its
 * own SHA-256 (every event the recorder seals carries one): its subject and id are then read from the event. Builds
 * before the cut-short write's piece was ended (disk-spool.ts, PIECE_END) also left, where a disk filled under an
 * append-only segment, a piece of a record with the next record joined to its end on one line; the record at the
 * end of such a line is recovered the same way, and the piece before it counts as damage.
 */

const TAB = 0x09;
const CRC_FIELD = 9; // the tab and 8 hex digits

/** zlib.crc32 is native from Node 20.15 on; the engines floor (20.10) gets the table below. */
const nativeCrc32 = (zlib as { crc32?: (data: string | Uint8Array) => number }).crc32;

let table: Uint32Array | undefined;
function tableCrc32(bytes: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = table[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const crc32 = (data: string | Uint8Array): number =>
  nativeCrc32 ? nativeCrc32(data) : tableCrc32(typeof data === 'string' ? Buffer.from(data) : data);

const hex8 = (n: number) => n.toString(16).padStart(8, '0');

/** The line that spools a record, newline included. */
export function spoolLine(subject: string, msgID: string, data: string): string {
  const body = `${subject}\t${msgID}\t${data}`;
  return `${body}\t${hex8(crc32(body))}\n`;
}

export interface SpoolLineRecord {
  subject: string;
  msgID: string;
  data: string;
}

export interface DecodedSpoolLine {
  /** The record the line holds, when it checks out. */
  record?: SpoolLineRecord;
  /** Some of the line is not what the writer wrote: whatever that held is lost, and the reader must declare it. */
  damaged: boolean;
}

const DAMAGED: DecodedSpoolLine = Object.freeze({ damaged: true });

/** Reads the line `buf[start, end)` (its newline excluded). */
export function decodeSpoolLine(buf: Buffer, start: number, end: number): DecodedSpoolLine {
  if (end - start > CRC_FIELD && buf[end - CRC_FIELD] === TAB) {
    const sum = buf.toString('latin1', end - 8, end);
    // A line of an older build ends with its JSON's `}`, never with a tab and 8 hex digits.
    if (/^[0-9a-f]{8}$/.test(sum)) return checkedLine(buf, start, end - CRC_FIELD, Number.parseInt(sum, 16));
  }
  return olderBuildLine(buf.toString('utf8', start, end));
}

function checkedLine(buf: Buffer, start: number, end: number, sum: number): DecodedSpoolLine {
  if (crc32(buf.subarray(start, end)) !== sum) return DAMAGED;
  const body = buf.toString('utf8', start, end);
  const t1 = body.indexOf('\t');
  const t2 = t1 < 0 ? -1 : body.indexOf('\t', t1 + 1);
  if (t2 < 0 || body.indexOf('\t', t2 + 1) >= 0) return DAMAGED;
  return {
    record: { subject: body.slice(0, t1), msgID: body.slice(t1 + 1, t2), data: body.slice(t2 + 1) },
    damaged: false,
  };
}

/**
 * A line without a checksum. Its last two fields are the record's id and event; only the event can be checked (by
 * the hash it was sealed with), so the subject and id are what the sink makes of that event, and anything else before
 * them (a joined piece, a damaged subject) is damage.
 */
function olderBuildLine(line: string): DecodedSpoolLine {
  const t2 = line.lastIndexOf('\t');
  const t1 = t2 > 0 ? line.lastIndexOf('\t', t2 - 1) : -1;
  if (t1 < 0) return DAMAGED;
  const head = line.slice(0, t1);
  const msgID = line.slice(t1 + 1, t2);
  const data = line.slice(t2 + 1);
  let event: Record<string, unknown>;
  try {
    event = JSON.parse(data);
  } catch {
    return DAMAGED;
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return DAMAGED;
  const subject = auditSubject(event);
  if (event.hash === undefined) {
    // Not sealed (code embedding the sink may emit such events): nothing to check it by but its subject.
    return head === subject ? { record: { subject, msgID, data }, damaged: false } : DAMAGED;
  }
  try {
    if (hashEvent(event as never) !== event.hash) return DAMAGED;
  } catch {
    return DAMAGED; // canonical JSON refuses what no sealed event holds
  }
  // The id the sink gives the event now, or the bare position of builds before the hash was part of it.
  const position = String(event.id);
  const now = messageId(position, event.hash);
  const id = msgID === now || msgID === messageId(position, undefined) ? msgID : now;
  return { record: { subject, msgID: id, data }, damaged: head !== subject };
}
