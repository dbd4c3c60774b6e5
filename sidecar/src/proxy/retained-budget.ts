import type { RowField } from './hooks.js';
import type { PreparedInfo } from './pipeline.js';

/**
 * What the sidecar keeps for as long as a prepared statement or portal exists, counted over every session of the
 * process: each statement's SQL text (the proxy must know what a later Bind runs), the result columns a Describe
 * returned, and the Bind values kept for a reviewer or the audit trail. PostgreSQL keeps these in the client's own
 * backend; here every session shares one process and its pod's memory limit, so besides the per-session cap
 * (MAX_PREPARED_BYTES) the sum is bounded: past it a Parse is refused with 53200, as PostgreSQL refuses what it
 * cannot allocate, and every other session goes on. Bytes are counted as the JS strings hold them (one per
 * character of ASCII/Latin-1 text) plus a rough cost per entry; the count is approximate, the bound is not.
 */
export class RetainedBudget {
  readonly limit: number;
  /** Bytes counted now. */
  held = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Whether `n` more bytes fit. */
  fits(n: number): boolean {
    return this.held + n <= this.limit;
  }
}

/**
 * Default: 32 MiB, what one session may hold (MAX_PREPARED_BYTES). The sidecar's RSS is ~55 MB under load; with this
 * it stays under the 96 MiB its pod is sized for. Drivers' statement caches hold well under 1 MiB a session.
 */
export const DEFAULT_RETAINED_STATEMENT_BYTES = 32 * 1024 * 1024;

/** What a tracked statement costs besides its text (the entry, its request and verdict objects), roughly. */
export const PREPARED_ENTRY_COST = 512;
/** What a tracked portal costs besides the values it keeps (its statement is counted as the statement's). */
export const PORTAL_ENTRY_COST = 256;

/** A RowDescription as kept: each field object and its name. */
export function fieldsCost(fields: readonly RowField[]): number {
  let n = 0;
  for (const f of fields) n += 96 + f.name.length;
  return n;
}

/** Bind values as kept (text, or binary as hex). */
export function paramsCost(values: readonly (string | null)[]): number {
  let n = 0;
  for (const v of values) n += 16 + (v === null ? 0 : v.length);
  return n;
}

/**
 * One session's share of the RetainedBudget. An entry (PreparedInfo) is counted once however many holders it has
 * (the statement map, and each portal bound from it keeps its statement alive): `ref` counts it on its first holder,
 * `unref` frees it with its last. Entries reached only through a map of the session (PreparedStatements, Portals).
 */
export class RetainedText {
  readonly budget: RetainedBudget;
  /** Bytes this session holds. */
  held = 0;
  private ended = false;

  constructor(budget: RetainedBudget) {
    this.budget = budget;
  }

  ref(info: PreparedInfo, own: number): void {
    info.refs = (info.refs ?? 0) + 1;
    if (info.refs > 1) return;
    info.charged = own;
    this.add(own);
  }

  unref(info: PreparedInfo): void {
    if (info.refs === undefined || info.refs === 0) return;
    if (--info.refs > 0) return;
    this.add(-(info.charged ?? 0));
    info.charged = 0;
  }

  /** `info` keeps `n` bytes more (or less): counted while something holds it. */
  grow(info: PreparedInfo, n: number): void {
    if (info.refs === undefined || info.refs === 0) return;
    info.charged = (info.charged ?? 0) + n;
    this.add(n);
  }

  /** The session ended: everything it held is given back at once (its maps go with it). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.budget.held -= this.held;
    this.held = 0;
  }

  private add(n: number): void {
    if (this.ended) return;
    this.held += n;
    this.budget.held += n;
  }
}
