/**
 * The emscripten module inside libpg-query (the package ships no types for it). Only what libpg-query-wasm.ts uses;
 * the C functions are libpg-query's wasm wrapper around libpg_query (pointers are byte offsets into HEAPU8).
 */
declare module 'libpg-query/wasm/libpg-query.js' {
  export interface PgQueryModule {
    /** Replaced by a new view whenever the WASM memory grows (the old one is then detached, length 0). */
    HEAPU8: Uint8Array;
    HEAPU32: Uint32Array;
    _malloc(size: number): number;
    _free(ptr: number): void;
    /** PgQueryParseResult* {parse_tree, stderr_buffer, error}; 0 for an empty string or when malloc fails. */
    _wasm_parse_query_raw(input: number): number;
    _wasm_free_parse_result(result: number): void;
    /** A string: the JSON of the function(s), or an error message. */
    _wasm_parse_plpgsql(input: number): number;
    /** A string: the statement with every constant replaced by `$n` (pg_query_normalize), or an error message. */
    _wasm_normalize_query(input: number): number;
    _wasm_free_string(ptr: number): void;
    stringToUTF8(str: string, ptr: number, maxBytes: number): number;
    UTF8ToString(ptr: number): string;
  }
  const createModule: () => Promise<PgQueryModule>;
  export default createModule;
}
