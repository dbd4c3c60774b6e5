/** How function calls carry lineage: opaque built-ins, side channels, and where user-defined code lives. */

/**
 * Built-in functions that run SQL given as text or read data outside the query's FROM list: their results cannot
 * be traced through the parse tree. https://www.postgresql.org/docs/current/functions-xml.html#FUNCTIONS-XML-MAPPING
 */
export const OPAQUE_FUNCTIONS = new Set([
  'query_to_xml',
  'query_to_xml_and_xmlschema',
  'table_to_xml',
  'table_to_xml_and_xmlschema',
  'cursor_to_xml',
  'schema_to_xml',
  'schema_to_xml_and_xmlschema',
  'database_to_xml',
  'database_to_xml_and_xmlschema',
  'dblink',
  'dblink_fetch',
  'dblink_get_result',
  'pg_read_file',
  'pg_read_binary_file',
  'lo_get',
  'loread',
  'pg_stat_statements',
  'pg_stat_get_activity',
  // Another backend's current query text, by backend id: pg_stat_activity.query without the view.
  'pg_stat_get_backend_activity',
]);

/**
 * Built-ins whose arguments leave the statement by another way than its result: notification payloads
 * (https://www.postgresql.org/docs/current/sql-notify.html), settings read back with SHOW/current_setting,
 * large objects read back with lo_get (and their OIDs, chosen by lo_create, listed in pg_largeobject_metadata),
 * sequence values read back with currval or pg_sequences, advisory lock keys listed in pg_locks (classid/objid:
 * https://www.postgresql.org/docs/current/view-pg-locks.html). Their arguments count as written.
 */
export const SIDE_CHANNEL_FUNCTIONS = new Set([
  'pg_notify',
  'set_config',
  'lo_from_bytea',
  'lo_create',
  'lo_import',
  'lo_put',
  'lowrite',
  'lo_truncate',
  'lo_truncate64',
  'dblink_exec',
  'pg_logical_emit_message',
  'setval',
  'pg_advisory_lock',
  'pg_advisory_lock_shared',
  'pg_advisory_xact_lock',
  'pg_advisory_xact_lock_shared',
  'pg_try_advisory_lock',
  'pg_try_advisory_lock_shared',
  'pg_try_advisory_xact_lock',
  'pg_try_advisory_xact_lock_shared',
]);

/** Built-in set-returning functions (https://www.postgresql.org/docs/current/functions-srf.html and JSON/array/regexp ones). */
export const SET_RETURNING_FUNCTIONS = new Set([
  'generate_series',
  'generate_subscripts',
  'unnest',
  'regexp_matches',
  'regexp_split_to_table',
  'string_to_table',
  'json_array_elements',
  'json_array_elements_text',
  'jsonb_array_elements',
  'jsonb_array_elements_text',
  'json_each',
  'json_each_text',
  'jsonb_each',
  'jsonb_each_text',
  'json_object_keys',
  'jsonb_object_keys',
  'jsonb_path_query',
  'json_to_recordset',
  'jsonb_to_recordset',
  'json_populate_recordset',
  'jsonb_populate_recordset',
]);

export const SYSTEM_FUNCTION_SCHEMAS = new Set(['pg_catalog', 'information_schema']);
