import type { DangerousCategory, StatementKind } from '../api/access-policy-schema.js';

/**
 * Functions whose call is a dangerous operation, matched by bare name in ANY schema (extensions such as dblink
 * and adminpack can be installed anywhere). Sources: PostgreSQL "System Administration Functions"
 * https://www.postgresql.org/docs/current/functions-admin.html, "Large Objects"
 * https://www.postgresql.org/docs/current/lo-funcs.html, and the dblink / adminpack modules.
 */
const DANGEROUS: Record<string, DangerousCategory> = {
  pg_read_file: 'server-file-access',
  pg_read_binary_file: 'server-file-access',
  pg_stat_file: 'server-file-access',
  pg_ls_dir: 'server-file-access',
  pg_ls_logdir: 'server-file-access',
  pg_ls_waldir: 'server-file-access',
  pg_ls_tmpdir: 'server-file-access',
  pg_ls_archive_statusdir: 'server-file-access',
  pg_ls_logicalsnapdir: 'server-file-access',
  pg_ls_logicalmapdir: 'server-file-access',
  pg_ls_replslotdir: 'server-file-access',
  pg_file_write: 'server-file-access',
  pg_file_rename: 'server-file-access',
  pg_file_unlink: 'server-file-access',
  pg_file_sync: 'server-file-access',
  pg_logdir_ls: 'server-file-access',
  lo_import: 'large-object-file-io',
  lo_export: 'large-object-file-io',
  pg_terminate_backend: 'signal-backend',
  pg_cancel_backend: 'signal-backend',
  pg_reload_conf: 'signal-backend',
  pg_rotate_logfile: 'signal-backend',
  pg_log_backend_memory_contexts: 'signal-backend',
  pg_promote: 'server-admin',
  pg_switch_wal: 'server-admin',
  pg_create_restore_point: 'server-admin',
  pg_backup_start: 'server-admin',
  pg_backup_stop: 'server-admin',
  pg_wal_replay_pause: 'server-admin',
  pg_wal_replay_resume: 'server-admin',
  pg_create_physical_replication_slot: 'server-admin',
  pg_create_logical_replication_slot: 'server-admin',
  pg_drop_replication_slot: 'server-admin',
  pg_copy_physical_replication_slot: 'server-admin',
  pg_copy_logical_replication_slot: 'server-admin',
  pg_replication_slot_advance: 'server-admin',
  pg_logical_emit_message: 'server-admin',
  // Decoded WAL: the rows every transaction wrote, in every table.
  // https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-REPLICATION
  pg_logical_slot_get_changes: 'server-admin',
  pg_logical_slot_peek_changes: 'server-admin',
  pg_logical_slot_get_binary_changes: 'server-admin',
  pg_logical_slot_peek_binary_changes: 'server-admin',
  pg_stat_reset: 'server-admin',
  pg_stat_reset_shared: 'server-admin',
  pg_stat_reset_single_table_counters: 'server-admin',
  pg_stat_reset_single_function_counters: 'server-admin',
  pg_stat_reset_slru: 'server-admin',
  pg_stat_reset_replication_slot: 'server-admin',
  pg_stat_reset_subscription_stats: 'server-admin',
};

export function dangerousFunction(name: string): DangerousCategory | undefined {
  if (Object.hasOwn(DANGEROUS, name)) return DANGEROUS[name];
  if (name.startsWith('dblink')) return 'dblink';
  if (name.startsWith('pg_replication_origin_')) return 'server-admin';
  return undefined;
}

/** Side effects of ordinary functions: what kind of operation a call counts as. */
export type SideEffect =
  | { type: 'sequence'; arg: number } // nextval/setval: an update of the sequence named by a regclass argument
  | { type: 'kind'; kind: StatementKind; writes: boolean }
  /** Changes the relation (an index) named by a regclass argument. */
  | { type: 'relation'; kind: StatementKind; arg: number }
  | { type: 'large-object'; writes: boolean };

const SIDE_EFFECTS: Record<string, SideEffect> = {
  nextval: { type: 'sequence', arg: 0 },
  setval: { type: 'sequence', arg: 0 },
  pg_notify: { type: 'kind', kind: 'notify', writes: false },
  lo_create: { type: 'large-object', writes: true },
  lo_creat: { type: 'large-object', writes: true },
  lo_unlink: { type: 'large-object', writes: true },
  lo_put: { type: 'large-object', writes: true },
  lo_from_bytea: { type: 'large-object', writes: true },
  lowrite: { type: 'large-object', writes: true },
  lo_truncate: { type: 'large-object', writes: true },
  lo_truncate64: { type: 'large-object', writes: true },
  lo_import: { type: 'large-object', writes: true },
  lo_export: { type: 'large-object', writes: false },
  lo_get: { type: 'large-object', writes: false },
  loread: { type: 'large-object', writes: false },
  lo_open: { type: 'large-object', writes: false },
  // Index maintenance, VACUUM's work done by a function: it changes the index (summaries, the GIN pending list) and
  // needs a rule that allows `maintenance` on it. https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-INDEX
  brin_summarize_new_values: { type: 'relation', kind: 'maintenance', arg: 0 },
  brin_summarize_range: { type: 'relation', kind: 'maintenance', arg: 0 },
  brin_desummarize_range: { type: 'relation', kind: 'maintenance', arg: 0 },
  gin_clean_pending_list: { type: 'relation', kind: 'maintenance', arg: 0 },
  // pg_visibility: drops the table's visibility map. https://www.postgresql.org/docs/current/pgvisibility.html
  pg_truncate_visibility_map: { type: 'relation', kind: 'maintenance', arg: 0 },
};

export function sideEffect(name: string): SideEffect | undefined {
  if (Object.hasOwn(SIDE_EFFECTS, name)) return SIDE_EFFECTS[name];
  // pg_advisory_lock, pg_try_advisory_xact_lock_shared, pg_advisory_unlock_all, ...
  if (/^pg_(try_)?advisory_/.test(name)) return { type: 'kind', kind: 'lock', writes: true };
  return undefined;
}

/**
 * Functions that run SQL or read relations named by a string argument: the string is analysed like the
 * statement itself; a non-literal argument cannot be analysed and counts as dynamic SQL.
 * https://www.postgresql.org/docs/current/functions-xml.html#FUNCTIONS-XML-MAPPING
 */
export type StringArgument =
  /** arity: only a call with exactly that many arguments runs SQL (an overload with another arity does not). */
  | { type: 'sql'; args: number[]; arity?: number }
  /** Reads an open cursor by name: what it returns was decided where the cursor was opened, out of sight here. */
  | { type: 'cursor' }
  | { type: 'relation'; arg: number }
  | { type: 'schema'; arg: number }
  | { type: 'database' };

const STRING_ARGUMENTS: Record<string, StringArgument> = {
  query_to_xml: { type: 'sql', args: [0] },
  query_to_xmlschema: { type: 'sql', args: [0] },
  query_to_xml_and_xmlschema: { type: 'sql', args: [0] },
  ts_stat: { type: 'sql', args: [0] },
  // ts_rewrite(tsquery, text) runs its second argument; ts_rewrite(tsquery, tsquery, tsquery) runs nothing.
  // https://www.postgresql.org/docs/current/textsearch-features.html#TEXTSEARCH-QUERY-REWRITING
  ts_rewrite: { type: 'sql', args: [1], arity: 2 },
  cursor_to_xml: { type: 'cursor' },
  cursor_to_xmlschema: { type: 'cursor' },
  crosstab: { type: 'sql', args: [0, 1] },
  crosstab2: { type: 'sql', args: [0] },
  crosstab3: { type: 'sql', args: [0] },
  crosstab4: { type: 'sql', args: [0] },
  table_to_xml: { type: 'relation', arg: 0 },
  table_to_xmlschema: { type: 'relation', arg: 0 },
  table_to_xml_and_xmlschema: { type: 'relation', arg: 0 },
  connectby: { type: 'relation', arg: 0 },
  // A sequence's state is its content. https://www.postgresql.org/docs/current/functions-sequence.html
  currval: { type: 'relation', arg: 0 },
  pg_sequence_last_value: { type: 'relation', arg: 0 },
  pg_sequence_parameters: { type: 'relation', arg: 0 },
  // pageinspect: raw pages of the named relation, i.e. its rows. https://www.postgresql.org/docs/current/pageinspect.html
  get_raw_page: { type: 'relation', arg: 0 },
  schema_to_xml: { type: 'schema', arg: 0 },
  schema_to_xmlschema: { type: 'schema', arg: 0 },
  schema_to_xml_and_xmlschema: { type: 'schema', arg: 0 },
  database_to_xml: { type: 'database' },
  database_to_xmlschema: { type: 'database' },
  database_to_xml_and_xmlschema: { type: 'database' },
};

export function stringArgument(name: string): StringArgument | undefined {
  return Object.hasOwn(STRING_ARGUMENTS, name) ? STRING_ARGUMENTS[name] : undefined;
}
