import type { RawStmt } from './parser.js';

/**
 * Statement spans are UTF-8 byte offsets (PostgreSQL's stmt_location/stmt_len; len 0 = to the end), so slice
 * bytes whenever the text is not pure ASCII.
 */
export function textSlicer(sql: string, count: number): (raw: RawStmt) => string {
  if (count === 1) return () => sql.trim();
  const bytes = Buffer.from(sql, 'utf8');
  const ascii = bytes.length === sql.length;
  return (raw) => {
    const start = raw.stmt_location ?? 0;
    const end = raw.stmt_len ? start + raw.stmt_len : ascii ? sql.length : bytes.length;
    return (ascii ? sql.slice(start, end) : bytes.subarray(start, end).toString('utf8')).trim();
  };
}
