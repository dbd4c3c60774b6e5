import { CollectorError } from '../errors.js';
import type { SqlClient } from './sql-client.js';

/**
 * Versioned schema. Append new entries; never edit an applied one. Each runs in its own transaction under an
 * advisory lock so that two collectors starting together do not race.
 */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'events, sessions, chain findings, cursors',
    sql: `
CREATE SEQUENCE audit_ingest_seq;
-- Range-partitioned by day on the event's own time; partitions are created on demand by the ingestor and
-- dropped whole by retention (https://www.postgresql.org/docs/current/ddl-partitioning.html).
-- The primary key must contain the partition key. v1 event ids are "<session>.<seq>", so (session_id, seq, time)
-- identifies an event exactly as its id does, and the same index serves "all events of a session in order".
-- "event" is the JSON text as received (evidence kept byte for byte; parsed on read). Storing it as text rather
-- than jsonb halves PostgreSQL's CPU per insert, and every query filters on the extracted columns anyway.
CREATE TABLE audit_events (
  id text NOT NULL,
  time timestamptz NOT NULL,
  ingest_seq bigint NOT NULL DEFAULT nextval('audit_ingest_seq'),
  received_at timestamptz NOT NULL DEFAULT now(),
  session_id text NOT NULL,
  seq bigint NOT NULL,
  type text NOT NULL,
  namespace text,
  policy text,
  identity text,
  kind text,
  decision text,
  tables text[] NOT NULL DEFAULT '{}',
  prev_hash text,
  hash text NOT NULL,
  event text NOT NULL,
  PRIMARY KEY (session_id, seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX audit_events_time_idx ON audit_events (time);
CREATE INDEX audit_events_identity_idx ON audit_events (identity, time);
CREATE INDEX audit_events_tables_idx ON audit_events USING gin (tables);
-- ingest_seq grows with physical insertion order, which is what BRIN summarises cheaply; exporters read by it.
CREATE INDEX audit_events_ingest_idx ON audit_events USING brin (ingest_seq);
CREATE TABLE audit_sessions (
  session_id text PRIMARY KEY,
  namespace text,
  policy text,
  identity text,
  first_time timestamptz,
  last_time timestamptz,
  events bigint NOT NULL DEFAULT 0,
  statements bigint NOT NULL DEFAULT 0,
  denied bigint NOT NULL DEFAULT 0,
  max_seq bigint NOT NULL DEFAULT -1,
  verified_seq bigint NOT NULL DEFAULT -1,
  verified_hash text,
  end_seq bigint,
  status text NOT NULL DEFAULT 'open',
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_sessions_time_idx ON audit_sessions (first_time DESC, session_id);
CREATE INDEX audit_sessions_status_idx ON audit_sessions (status);
CREATE TABLE audit_chain_findings (
  id bigserial PRIMARY KEY,
  session_id text NOT NULL,
  kind text NOT NULL,
  seq_from bigint NOT NULL,
  seq_to bigint NOT NULL,
  detail text NOT NULL,
  detected_at timestamptz NOT NULL DEFAULT now(),
  resolved_at timestamptz,
  UNIQUE (session_id, kind, seq_from)
);
CREATE TABLE audit_rejected (
  id bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now(),
  source text NOT NULL,
  reason text NOT NULL,
  raw text NOT NULL
);
CREATE TABLE collector_cursors (
  name text PRIMARY KEY,
  position bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);`,
  },
  {
    version: 2,
    name: 'signed checkpoints per session',
    sql: `
-- Signed audit checkpoints (collector/src/signatures): the state judged at ingest (signed, partial, unsigned,
-- unverified), the highest seq a valid checkpoint vouches for and the name of its key. Sessions stored before
-- this migration were never judged: 'unsigned' until a checkpoint of theirs arrives or audit verify re-judges.
ALTER TABLE audit_sessions ADD COLUMN signature text NOT NULL DEFAULT 'unsigned';
ALTER TABLE audit_sessions ADD COLUMN signed_seq bigint;
ALTER TABLE audit_sessions ADD COLUMN signed_key text;`,
  },
  {
    version: 3,
    name: 'chain heads recorded by sidecars',
    sql: `
-- What each sidecar's own chain said about its session chains (audit.heads, collector/src/chain/chain-heads.ts): the
-- highest seq and its hash, per session and per sidecar instance and namespace that said so, so that a claim
-- published from another namespace (another NATS user) cannot mask or replace the real one. A session whose stored
-- events stop short of its head lost its tail.
CREATE TABLE audit_chain_heads (
  session_id text NOT NULL,
  instance text NOT NULL,
  seq bigint NOT NULL,
  hash text NOT NULL,
  event_id text NOT NULL,
  -- The namespace of the heads event (the sidecar's; '' for none): a chain deleted whole is filed under it.
  namespace text NOT NULL,
  -- When this seq was first recorded (the gap sweep's grace runs from it).
  received_at timestamptz NOT NULL DEFAULT now(),
  -- The time of the latest heads event that named the chain, grown or not, and how often its sidecar names the
  -- chains it holds open: a session not ended and not named for three such periods was cut off.
  seen_at timestamptz NOT NULL,
  refresh_ms integer,
  PRIMARY KEY (session_id, instance, namespace)
);
-- The sidecar instance that wrote the session (source.instance of its first event): whose heads count for it.
ALTER TABLE audit_sessions ADD COLUMN instance text;
-- When the periodic sweep first found the session interrupted (its sidecar stopped naming it without ending it),
-- so that each is reported once; the partial index keeps that sweep to the sessions still open.
ALTER TABLE audit_sessions ADD COLUMN interrupted_at timestamptz;
CREATE INDEX audit_sessions_unended_idx ON audit_sessions (session_id) WHERE end_seq IS NULL AND interrupted_at IS NULL;`,
  },
  {
    version: 4,
    name: 'events other than statements by type',
    sql: `
-- Whether the sidecars applied a live control action (GET /api/v1/control/{id}) and searches by type look among the
-- few events that are not statements; statements, nearly every row, stay out of the index and cost nothing more.
CREATE INDEX audit_events_type_idx ON audit_events (type, time) WHERE type <> 'statement';`,
  },
  {
    version: 5,
    name: 'web UI sessions and sign-ins in flight',
    sql: `
-- The web UI's OIDC sign-in (auth/web-sessions.ts) kept where every replica sees it, and through restarts. A session
-- is keyed by the SHA-256 of the random id its cookie holds, so whoever reads this table cannot present one; it
-- holds who signed in (the entry bound then, and the ID token's issuer, sub, username claim and groups) until the ID
-- token's exp, never a token of the identity provider.
CREATE TABLE collector_web_sessions (
  id_sha256 text PRIMARY KEY,
  entry text NOT NULL,
  issuer text NOT NULL,
  subject text NOT NULL,
  username text NOT NULL,
  groups text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX collector_web_sessions_expires_idx ON collector_web_sessions (expires_at);
-- A sign-in between the redirect to the identity provider and its callback, keyed by the SHA-256 of its state
-- (the browser's login cookie holds the state itself); deleted as it is used, so a callback works once, anywhere.
CREATE TABLE collector_web_logins (
  state_sha256 text PRIMARY KEY,
  verifier text NOT NULL,
  nonce text NOT NULL,
  return_to text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX collector_web_logins_expires_idx ON collector_web_logins (expires_at);`,
  },
  {
    version: 6,
    name: 'the client each sign-in in flight came from',
    sql: `
-- Who started each sign-in (its address, an IPv6 /64): past the cap the rows of whoever holds the most go first, so
-- a flood from one client cannot push everyone else's sign-ins out (auth/web-sessions.ts). Rows from before hold ''.
ALTER TABLE collector_web_logins ADD COLUMN source text NOT NULL DEFAULT '';`,
  },
  {
    version: 7,
    name: 'findings closed by hand, and declarations made again',
    sql: `
-- An approver may close a finding (POST /api/v1/findings/{id}/close): who (the entry's name, and the OIDC issuer and
-- sub when they came that way), when and why. A closed finding is no longer open; it is neither resolved by events
-- that arrive later nor widened, and a finding it covers is not raised again.
ALTER TABLE audit_chain_findings ADD COLUMN closed_at timestamptz;
ALTER TABLE audit_chain_findings ADD COLUMN closed_by text;
ALTER TABLE audit_chain_findings ADD COLUMN closed_reason text;
ALTER TABLE audit_chain_findings ADD COLUMN closed_oidc_issuer text;
ALTER TABLE audit_chain_findings ADD COLUMN closed_oidc_subject text;
-- What a sidecar's declaration of an unattributed loss said (store/declared-gaps.ts): a restarted sidecar declares
-- the same loss again in a chain of its own, which is the same finding, not a second one.
ALTER TABLE audit_chain_findings ADD COLUMN declaration text;
CREATE UNIQUE INDEX audit_chain_findings_declaration_idx ON audit_chain_findings (declaration) WHERE declaration IS NOT NULL;`,
  },
  {
    version: 8,
    name: 'web sessions renewed with refresh tokens, bounded by age and idleness',
    sql: `
-- A web session may outlive its ID token (auth/web-sessions.ts, --web-session-key-file): the identity provider's
-- refresh token, sealed with AES-256-GCM under a key the store never holds and the session's id (only the browser
-- holds it) as associated data; the sign-in's nonce (its SHA-256) and auth_time, which a renewed ID token must
-- repeat if it carries them (OpenID Connect Core 1.0 §12.2); when to renew (renew_after), which replica is renewing
-- until when (one claim per row: two replicas never spend one refresh token twice) and why the last attempt failed.
-- Every session ends at ends_at (its maximum age) or once unused for the idle timeout; "ended" says why one was
-- ended early (the identity provider refused to renew it), for the page to show.
ALTER TABLE collector_web_sessions ADD COLUMN refresh_sealed bytea;
ALTER TABLE collector_web_sessions ADD COLUMN nonce_sha256 text;
ALTER TABLE collector_web_sessions ADD COLUMN auth_time bigint;
ALTER TABLE collector_web_sessions ADD COLUMN renew_after timestamptz;
ALTER TABLE collector_web_sessions ADD COLUMN renewing_by text;
ALTER TABLE collector_web_sessions ADD COLUMN renewing_until timestamptz;
ALTER TABLE collector_web_sessions ADD COLUMN renew_failure text;
ALTER TABLE collector_web_sessions ADD COLUMN ends_at timestamptz NOT NULL DEFAULT 'infinity';
ALTER TABLE collector_web_sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE collector_web_sessions ADD COLUMN ended text;`,
  },
  {
    version: 9,
    name: 'web sign-in rate shared by replicas',
    sql: `
-- One token bucket per client (its address, or IPv6 /64) for starting web sign-ins, shared by every replica on the
-- store: one upsert takes a token or says how long to wait (http/shared-sign-in-rate.ts). Rows of clients whose
-- bucket has refilled are swept.
CREATE TABLE collector_sign_in_buckets (
  client text PRIMARY KEY,
  tokens float8 NOT NULL,
  at timestamptz NOT NULL,
  granted boolean NOT NULL
);`,
  },
];

const LOCK_KEY = 7_245_001; // arbitrary constant: the advisory lock that serialises migrations

export async function migrate(db: SqlClient): Promise<number[]> {
  await db.query(`CREATE TABLE IF NOT EXISTS pgwarden_schema_migrations (
    version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
  const applied: number[] = [];
  for (const m of MIGRATIONS) {
    try {
      await db.transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
        const done = await tx.query('SELECT 1 FROM pgwarden_schema_migrations WHERE version = $1', [m.version]);
        if (done.length > 0) return;
        for (const stmt of splitStatements(m.sql)) await tx.query(stmt);
        await tx.query('INSERT INTO pgwarden_schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        applied.push(m.version);
      });
    } catch (err) {
      throw new CollectorError(
        'COLLECTOR_MIGRATION',
        `migration ${m.version} (${m.name}) failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return applied;
}

/** Our migrations contain no semicolons inside literals or bodies, so a split on `;` at line end is exact. */
function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s.length > 0);
}
