import pg from 'pg';
import { inject } from 'vitest';

/**
 * A private database (and NOLOGIN roles) in the shared test cluster, shaped like the example policies' world:
 * public.orders/customers/order_items/products, hr.salaries, sequences, and a read trace. Every role gets ALL
 * privileges, so whatever pgwarden denies would have succeeded had it reached PostgreSQL: an unchanged
 * fingerprint then proves the statement never got there.
 */
export interface GovernanceDb {
  name: string;
  /** NOLOGIN roles the sidecar's login (app_scram) may SET ROLE to. */
  roles: { analyst: string; writer: string; admin: string };
  /** Runs SQL as the superuser (unix socket) in this database. */
  su<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<pg.QueryResult<T>>;
  /** A digest of everything a statement could change: catalog objects, ACLs, rows, sequences, reads, locks. */
  fingerprint(): Promise<string>;
  readCount(): Promise<number>;
  drop(): Promise<void>;
}

const SCHEMA = `
CREATE SCHEMA hr;
CREATE TABLE public.read_log (what text NOT NULL, at timestamptz NOT NULL DEFAULT now());
-- SECURITY DEFINER so any role's read leaves a trace it cannot avoid or erase.
CREATE FUNCTION public.log_read(what text) RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
  AS $$ BEGIN INSERT INTO public.read_log(what) VALUES (what); RETURN true; END $$;
CREATE TABLE public.orders (id serial PRIMARY KEY, customer_id int, status text DEFAULT 'new', a int, note text, total numeric DEFAULT 0);
CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text, phone text, ssn text);
CREATE TABLE public.order_items (order_id int, product_id int, qty int);
CREATE TABLE public.products_data (id int, name text);
CREATE VIEW public.products AS SELECT * FROM public.products_data WHERE public.log_read('products');
CREATE VIEW public.orders_view AS SELECT * FROM public.orders;
CREATE TABLE hr.salaries_data (id int, amount int);
CREATE VIEW hr.salaries AS SELECT * FROM hr.salaries_data WHERE public.log_read('hr.salaries');
CREATE SEQUENCE hr.emp_seq;
CREATE TABLE hr.docs (vector tsvector);
CREATE PROCEDURE public.do_things() LANGUAGE sql AS $$ INSERT INTO public.read_log(what) VALUES ('do_things') $$;
INSERT INTO public.customers VALUES (1, 'Ann', 'ann@example.com', '+1 555 0100', '123-45-6789'), (2, 'Bob', 'bob@example.com', '+1 555 0101', '987-65-4321');
INSERT INTO public.orders (customer_id, status, total) SELECT 1 + i % 2, 'new', i FROM generate_series(1, 50) i;
INSERT INTO public.order_items SELECT i, 1, 1 FROM generate_series(1, 50) i;
INSERT INTO public.products_data VALUES (1, 'widget');
INSERT INTO hr.salaries_data VALUES (1, 100000), (42, 1);
`;

const FINGERPRINT = `
SELECT md5(concat_ws('|',
  (SELECT string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || coalesce(c.relacl::text, ''), ',' ORDER BY n.nspname, c.relname)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'hr')),
  (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('public', 'hr') AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'hr')),
  (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
  (SELECT count(*) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'hr')),
  (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM public.orders t),
  (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM public.customers t),
  (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM public.order_items t),
  (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM hr.salaries_data t),
  (SELECT last_value || ':' || is_called FROM public.orders_id_seq),
  (SELECT last_value || ':' || is_called FROM hr.emp_seq),
  (SELECT count(*) FROM public.read_log),
  (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
  (SELECT count(*) FROM pg_roles WHERE rolname = 'evil'),
  (SELECT count(*) FROM pg_largeobject_metadata),
  (SELECT setting FROM pg_file_settings WHERE name = 'work_mem' LIMIT 1)
)) AS f`;

export async function createGovernanceDb(tag: string): Promise<GovernanceDb> {
  const shared = inject('pg');
  const suffix = `${tag}_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
  const name = `gov_${suffix}`;
  const roles = { analyst: `gov_ro_${suffix}`, writer: `gov_wr_${suffix}`, admin: `gov_adm_${suffix}` };
  const connect = async (database: string) => {
    const c = new pg.Client({ host: shared.socketDir, port: shared.port, user: 'postgres', database });
    await c.connect();
    return c;
  };
  const root = await connect('postgres');
  await root.query(`CREATE DATABASE ${name} OWNER app_scram`);
  for (const r of Object.values(roles)) await root.query(`CREATE ROLE ${r} NOLOGIN; GRANT ${r} TO app_scram`);
  await root.end();
  const db = await connect(name);
  await db.query(SCHEMA);
  for (const r of Object.values(roles)) {
    await db.query(`GRANT ALL ON SCHEMA public, hr TO ${r};
      GRANT ALL ON ALL TABLES IN SCHEMA public, hr TO ${r} WITH GRANT OPTION;
      GRANT ALL ON ALL SEQUENCES IN SCHEMA public, hr TO ${r};
      GRANT CREATE, TEMPORARY ON DATABASE ${name} TO ${r}`);
  }
  return {
    name,
    roles,
    su: (sql, params) => db.query(sql, params as unknown[]),
    fingerprint: async () => (await db.query<{ f: string }>(FINGERPRINT)).rows[0].f,
    readCount: async () =>
      Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM public.read_log')).rows[0].n),
    async drop() {
      await db.end();
      const r = await connect('postgres');
      await r.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      for (const role of Object.values(roles)) await r.query(`DROP ROLE IF EXISTS ${role}`);
      await r.end();
    },
  };
}

/**
 * A backend of the sidecar's login (app_scram) in `database`, connected directly, and its pid: what an operator over
 * pg_terminate_backend could terminate.
 */
export async function loginBackend(database: string): Promise<{ client: pg.Client; pid: number }> {
  const shared = inject('pg');
  const client = new pg.Client({
    host: shared.host,
    port: shared.port,
    database,
    user: 'app_scram',
    password: 'scram-pw-1',
  });
  client.on('error', () => undefined);
  await client.connect();
  const pid = Number((await client.query('SELECT pg_backend_pid() AS p')).rows[0].p);
  return { client, pid };
}
