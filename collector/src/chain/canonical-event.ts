import type { AuditEvent } from '../event.js';
import { type CanonicalSink, canonicalEventHash, hashDigitsAt } from './canonical-utf8.js';

/**
 * An event read from canonical sidecar bytes in the one pass that proves them canonical and hashes them
 * (canonical-utf8.ts), instead of JSON.parse of the whole event: only the members the collector indexes, verifies
 * and validates (`parseEvent`, `indexedFields`, the chain rules) are materialised, each equal to what JSON.parse of
 * the same bytes gives. A tracked member of an unexpected JSON type, an `audit.gap`, `audit.checkpoint` or
 * `audit.heads` event (their `gap`, `checkpoint` and `heads` members are read at ingest; all are rare) or anything
 * not canonical returns undefined: the caller parses the whole text instead.
 */
export interface CanonicalEvent {
  event: AuditEvent;
  /** sha256 of the canonical encoding of the event without `hash`: what `hashEvent` gives for the full event. */
  hash: string;
}

export function readCanonicalEvent(utf8: Uint8Array): CanonicalEvent | undefined {
  const b = Buffer.isBuffer(utf8) ? utf8 : Buffer.from(utf8.buffer, utf8.byteOffset, utf8.byteLength);
  sink.reset(b);
  const hash = canonicalEventHash(b, sink);
  if (
    hash === undefined ||
    sink.unsupported ||
    sink.type === 'audit.gap' ||
    sink.type === 'audit.checkpoint' ||
    sink.type === 'audit.heads'
  )
    return undefined;
  const at = hashDigitsAt(b);
  return { event: sink.event((b as SliceableBuffer).latin1Slice(at, at + 64)), hash };
}

/**
 * The event as received: the tracked members as own properties (undefined where the event has none), and the whole
 * event, parsed from the bytes on demand, wherever it is serialised (JSON.stringify), so a live-tail client still
 * gets every member. Not for hashing: the chain check takes the hash computed from the bytes (IngestItem.hash).
 */
class ReceivedEvent {
  constructor(
    readonly type: string | undefined,
    readonly id: string | undefined,
    readonly time: string | undefined,
    readonly session: Record<string, unknown> | undefined,
    readonly identity: Record<string, unknown> | undefined,
    readonly statement: Record<string, unknown> | undefined,
    readonly decision: Record<string, unknown> | undefined,
    readonly policy: Record<string, unknown> | undefined,
    readonly source: Record<string, unknown> | undefined,
    readonly prevHash: string | null | undefined,
    readonly hash: string,
    utf8: Buffer,
  ) {
    this.#utf8 = utf8;
  }

  readonly #utf8: Buffer;

  toJSON(): unknown {
    return JSON.parse(this.#utf8.toString('utf8'));
  }
}

// Which object a container is (the code of the member holding it), or which member a key names.
const NONE = 0;
const TOP = 1;
const SESSION = 2;
const IDENTITY = 3;
const STATEMENT = 4;
const DECISION = 5;
const POLICY = 6;
const TABLES = 7;
/** An element of statement.tables. */
const TABLE = 8;
const SOURCE = 9;
// Scalar members.
const ID = 10;
const TYPE = 11;
const TIME = 12;
const PREV_HASH = 13;
const SESSION_ID = 14;
const SEQ = 15;
const NAMESPACE = 16;
const SERVICE_ACCOUNT = 17;
const POD = 18;
const USER = 19;
const KIND = 20;
const ACTION = 21;
const POLICY_NAME = 22;
const INSTANCE = 23;

/** Tracked member names by the code of the object holding them. */
const MEMBERS: Record<number, [string, number][]> = {
  [TOP]: [
    ['id', ID],
    ['type', TYPE],
    ['time', TIME],
    ['prevHash', PREV_HASH],
    ['session', SESSION],
    ['identity', IDENTITY],
    ['statement', STATEMENT],
    ['decision', DECISION],
    ['policy', POLICY],
    // source.instance: whose audit.heads speak for the session (chain-heads.ts).
    ['source', SOURCE],
  ],
  [SESSION]: [
    ['id', SESSION_ID],
    ['seq', SEQ],
  ],
  [IDENTITY]: [
    ['namespace', NAMESPACE],
    ['serviceAccount', SERVICE_ACCOUNT],
    ['pod', POD],
    ['user', USER],
  ],
  [STATEMENT]: [
    ['kind', KIND],
    ['tables', TABLES],
  ],
  [DECISION]: [['action', ACTION]],
  [POLICY]: [['name', POLICY_NAME]],
  [SOURCE]: [['instance', INSTANCE]],
};
/** MEMBERS by container code, the names as bytes. */
const MEMBER_BYTES: ([Buffer, number][] | undefined)[] = [];
for (const [k, v] of Object.entries(MEMBERS))
  MEMBER_BYTES[Number(k)] = v.map(([name, code]) => [Buffer.from(name), code]);

const MAX_DEPTH = 64;
const EMPTY = Buffer.alloc(0);

class EventFieldSink implements CanonicalSink {
  unsupported = false;
  type: string | undefined;
  private b: Buffer = EMPTY;
  /** Code of the container at each depth (NONE: not tracked). */
  private readonly container = new Uint8Array(MAX_DEPTH + 1);
  /** Code of the member whose value comes next, per object depth. */
  private readonly pending = new Uint8Array(MAX_DEPTH + 1);
  private id: string | undefined;
  private time: string | undefined;
  private prevHash: string | null | undefined;
  private session: Record<string, unknown> | undefined;
  private identity: Record<string, unknown> | undefined;
  private statement: Record<string, unknown> | undefined;
  private decision: Record<string, unknown> | undefined;
  private policy: Record<string, unknown> | undefined;
  private source: Record<string, unknown> | undefined;
  private tables: string[] | undefined;

  reset(b: Buffer): void {
    this.b = b;
    this.unsupported = false;
    this.type = this.id = this.time = this.prevHash = undefined;
    this.session = this.identity = this.statement = this.decision = this.policy = this.source = this.tables = undefined;
  }

  event(hash: string): AuditEvent {
    const e = new ReceivedEvent(
      this.type,
      this.id,
      this.time,
      this.session,
      this.identity,
      this.statement,
      this.decision,
      this.policy,
      this.source,
      this.prevHash,
      hash,
      this.b,
    );
    this.b = EMPTY;
    return e as unknown as AuditEvent;
  }

  key(depth: number, start: number, end: number): void {
    const members = MEMBER_BYTES[this.container[depth]];
    let code = NONE;
    if (members !== undefined) {
      const len = end - start;
      const b = this.b;
      for (const [name, c] of members) {
        if (name.length !== len || name[0] !== b[start]) continue;
        let k = 1;
        while (k < len && name[k] === b[start + k]) k++;
        if (k === len) {
          code = c;
          break;
        }
      }
    }
    this.pending[depth] = code;
  }

  open(depth: number, object: boolean): void {
    if (depth === 0) {
      this.container[1] = TOP;
      return;
    }
    const code = this.valueOf(depth);
    let inner = code;
    if (code === NONE) {
      // Not read: neither is anything inside it.
    } else if (!object) {
      if (code === TABLES) {
        this.tables = [];
        (this.statement as Record<string, unknown>).tables = this.tables;
      } else inner = this.refuse();
    } else if (code === SESSION) this.session = {};
    else if (code === IDENTITY) this.identity = {};
    else if (code === STATEMENT) this.statement = {};
    else if (code === DECISION) this.decision = {};
    else if (code === POLICY) this.policy = {};
    else if (code === SOURCE) this.source = {};
    else inner = this.refuse(); // a tracked member that is not the object the collector reads
    this.container[depth + 1] = inner;
    this.pending[depth + 1] = NONE;
  }

  string(depth: number, start: number, end: number, escaped: boolean, ascii: boolean): void {
    const code = this.valueOf(depth);
    if (code === NONE) return;
    const b = this.b as SliceableBuffer;
    const text = escaped
      ? (JSON.parse(b.utf8Slice(start - 1, end + 1)) as string)
      : !ascii
        ? b.utf8Slice(start, end)
        : code === ID || code === TIME || code === PREV_HASH
          ? b.latin1Slice(start, end)
          : intern(b, start, end);
    switch (code) {
      case TABLE:
        (this.tables as string[]).push(text);
        return;
      case ID:
        this.id = text;
        return;
      case TYPE:
        this.type = text;
        return;
      case TIME:
        this.time = text;
        return;
      case PREV_HASH:
        this.prevHash = text;
        return;
      case SESSION_ID:
        (this.session as Record<string, unknown>).id = text;
        return;
      case NAMESPACE:
        (this.identity as Record<string, unknown>).namespace = text;
        return;
      case SERVICE_ACCOUNT:
        (this.identity as Record<string, unknown>).serviceAccount = text;
        return;
      case POD:
        (this.identity as Record<string, unknown>).pod = text;
        return;
      case USER:
        (this.identity as Record<string, unknown>).user = text;
        return;
      case KIND:
        (this.statement as Record<string, unknown>).kind = text;
        return;
      case ACTION:
        (this.decision as Record<string, unknown>).action = text;
        return;
      case POLICY_NAME:
        (this.policy as Record<string, unknown>).name = text;
        return;
      case INSTANCE:
        (this.source as Record<string, unknown>).instance = text;
        return;
      default:
        this.unsupported = true;
    }
  }

  number(depth: number, from: number, to: number): void {
    const code = this.valueOf(depth);
    if (code === NONE) return;
    if (code !== SEQ) {
      this.unsupported = true;
      return;
    }
    // canonical-utf8 accepted the token: Number() of its text is exactly what JSON.parse yields.
    (this.session as Record<string, unknown>).seq = Number((this.b as SliceableBuffer).latin1Slice(from, to));
  }

  literal(depth: number, first: number): void {
    const code = this.valueOf(depth);
    if (code === NONE) return;
    if (code === PREV_HASH && first === 0x6e /* null */) this.prevHash = null;
    else this.unsupported = true;
  }

  /** Marks the event for the JSON.parse path; what is inside the refused value is not read. */
  private refuse(): number {
    this.unsupported = true;
    return NONE;
  }

  /** The member code a value at `depth` belongs to: the pending key's in an object, the array's in TABLES. */
  private valueOf(depth: number): number {
    const c = this.container[depth];
    if (c === TABLES) return TABLE;
    if (c === NONE) return NONE;
    return this.pending[depth];
  }
}

const sink = new EventFieldSink();

/** Buffer's own slicing methods, without the argument handling of `toString` (bounds are ours and valid). */
interface SliceableBuffer extends Buffer {
  latin1Slice(start: number, end: number): string;
  utf8Slice(start: number, end: number): string;
}

/**
 * The members that repeat from event to event (type, session id, identity, kind, decision, policy, tables) as
 * strings already made, when the same ASCII bytes came before: one slot per hash of the bytes, checked byte by
 * byte, so a collision only costs a new string.
 */
const interned: (string | undefined)[] = new Array(1024).fill(undefined);
function intern(b: SliceableBuffer, start: number, end: number): string {
  const len = end - start;
  if (len > 64) return b.latin1Slice(start, end);
  let h = 0x811c9dc5 ^ len;
  for (let k = start; k < end; k++) h = Math.imul(h ^ b[k], 0x01000193);
  const slot = (h >>> 0) & 1023;
  const known = interned[slot];
  if (known !== undefined && known.length === len) {
    let k = 0;
    while (k < len && known.charCodeAt(k) === b[start + k]) k++;
    if (k === len) return known;
  }
  const made = b.latin1Slice(start, end);
  interned[slot] = made;
  return made;
}
