import type { PgQueryModule } from 'libpg-query/wasm/libpg-query.js';

/**
 * A thin binding over libpg-query's emscripten module, used instead of the package's index.js: that wrapper
 * measures, mallocs, encodes and frees the input with emscripten's JavaScript string helpers and reads the result
 * back with a byte-by-byte NUL search, which together cost a few microseconds per statement (and garbage) on the
 * policy engine's hot path. Here the input is encoded natively into one reused buffer in the WASM heap and the
 * result is found with memchr and decoded once. Outputs are the same as libpg-query 18.1.5's parseSync and
 * parsePlPgSQLSync: the same C functions, the same bytes in and out.
 */

/** A parse failure: libpg_query's error (with its cursor position) or the wrapper's own (without one). */
export class PgQueryError extends Error {
  /** libpg_query's `cursorpos`: 1-based character offset, 0 when PostgreSQL gave none; undefined for wrapper errors. */
  readonly cursorpos: number | undefined;
  constructor(message: string, cursorpos?: number) {
    super(message);
    this.name = 'PgQueryError';
    this.cursorpos = cursorpos;
  }
}

export interface PgQueryBinding {
  /** The parse tree as libpg_query's JSON text; throws PgQueryError when the SQL does not parse. */
  parseQueryJson(sql: string): string;
  /** libpg_query's PL/pgSQL JSON for a CREATE FUNCTION statement, or its error message (text not starting `{`). */
  parsePlpgsqlText(sql: string): string;
  /** The SQL with every constant replaced by `$n`, as pg_stat_statements shows it; throws when it does not parse. */
  normalizeQuery(sql: string): string;
}

let loading: Promise<PgQueryBinding> | undefined;

/**
 * Instantiates the WASM module once per process. It is imported here, not at the top: instantiating it costs
 * ~12 MiB of RSS, which a sidecar that runs without a policy (allow-all, audit only) never needs.
 */
export function loadPgQuery(): Promise<PgQueryBinding> {
  loading ??= import('libpg-query/wasm/libpg-query.js').then(async (m) => bind(await m.default()));
  return loading;
}

/** Inputs up to this size reuse one buffer; a larger one gets its own allocation, so the heap does not keep it. */
const KEPT_INPUT_BYTES = 64 * 1024;
/** Emscripten decodes strings of up to 16 bytes in JavaScript, longer ones with TextDecoder (same result). */
const SHORT_STRING_BYTES = 16;

// String.prototype.isWellFormed (ES2024, Node 20+) is not in the es2023 lib the repo compiles against.
const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

function bind(mod: PgQueryModule): PgQueryBinding {
  const decoder = new TextDecoder();
  let inputPtr = 0;
  let inputCap = 0;
  // Views over the WASM memory. Growing the memory detaches its ArrayBuffer (the views then have length 0) and
  // emscripten replaces mod.HEAPU8, so every call that can allocate is followed by heap().
  let u8 = mod.HEAPU8;
  let buf = Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
  const heap = (): Buffer => {
    if (mod.HEAPU8 !== u8) {
      u8 = mod.HEAPU8;
      buf = Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
    }
    return buf;
  };

  const malloc = (size: number): number => {
    const ptr = mod._malloc(size);
    if (ptr === 0) throw new PgQueryError('Failed to parse query: memory allocation failed');
    return ptr;
  };

  /** Writes `sql` NUL-terminated into the WASM heap; returns its address (inputPtr unless it was too large). */
  const writeInput = (sql: string): number => {
    // UTF-8 needs at most 3 bytes per UTF-16 code unit (4 for a surrogate pair, which is two units).
    let size = sql.length * 3 + 1;
    if (size > inputCap) {
      size = Buffer.byteLength(sql, 'utf8') + 1;
      if (size > KEPT_INPUT_BYTES) return writeAt(sql, malloc(size), size);
      if (size > inputCap) {
        if (inputPtr !== 0) mod._free(inputPtr);
        inputPtr = 0;
        inputCap = Math.min(KEPT_INPUT_BYTES, Math.max(size, inputCap * 2, 4096));
        inputPtr = malloc(inputCap);
      }
    }
    return writeAt(sql, inputPtr, size);
  };

  const writeAt = (sql: string, ptr: number, size: number): number => {
    const b = heap();
    if (isWellFormed(sql)) b[ptr + b.write(sql, ptr, size - 1, 'utf8')] = 0;
    // A lone surrogate: emscripten encodes its code unit as is (TextEncoder would write U+FFFD). Stay identical.
    else mod.stringToUTF8(sql, ptr, size);
    return ptr;
  };

  const readString = (ptr: number): string => {
    if (ptr === 0) return '';
    const end = heap().indexOf(0, ptr); // memchr; TypedArray indexOf is ~30x slower on a 2.7 KB tree
    return end - ptr > SHORT_STRING_BYTES ? decoder.decode(u8.subarray(ptr, end)) : mod.UTF8ToString(ptr);
  };

  const freeInput = (ptr: number): void => {
    if (ptr !== inputPtr) mod._free(ptr);
  };

  return {
    parseQueryJson(sql: string): string {
      if (sql === '') throw new PgQueryError('Query cannot be empty');
      const input = writeInput(sql);
      let result = 0;
      try {
        result = mod._wasm_parse_query_raw(input);
        if (result === 0) throw new PgQueryError('Failed to parse query: memory allocation failed');
        heap();
        // PgQueryParseResult {char *parse_tree; char *stderr_buffer; PgQueryError *error} (wasm32: 4-byte fields)
        const u32 = mod.HEAPU32;
        const tree = u32[result >>> 2];
        const error = u32[(result >>> 2) + 2];
        if (error !== 0) {
          // PgQueryError {char *message; char *funcname; char *filename; int lineno; int cursorpos; ...}
          const message = u32[error >>> 2];
          throw new PgQueryError(message ? readString(message) : 'Unknown error', u32[(error >>> 2) + 4] | 0);
        }
        if (tree === 0) throw new PgQueryError('No parse tree generated');
        return readString(tree);
      } finally {
        if (result !== 0) mod._wasm_free_parse_result(result);
        freeInput(input);
      }
    },

    normalizeQuery(sql: string): string {
      const input = writeInput(sql);
      let result = 0;
      try {
        result = mod._wasm_normalize_query(input);
        const text = readString(result);
        // The wrapper returns its errors in the same string (libpg-query's own normalizeSync checks these prefixes).
        if (/^(syntax error|deparse error|ERROR)/.test(text)) throw new PgQueryError(text);
        return text;
      } finally {
        if (result !== 0) mod._wasm_free_string(result);
        freeInput(input);
      }
    },

    parsePlpgsqlText(sql: string): string {
      const input = writeInput(sql);
      let result = 0;
      try {
        result = mod._wasm_parse_plpgsql(input);
        return readString(result);
      } finally {
        if (result !== 0) mod._wasm_free_string(result);
        freeInput(input);
      }
    },
  };
}
