"""psycopg2 (libpq, from Debian's python3-psycopg2) through the pgwarden sidecar.

Connection comes from the libpq environment (PGHOST, PGPORT, ...). Each check prints one JSON line
{"check": name, ...observations}; psycopg2.test.ts asserts on them. Observations only: no verdicts here.
"""
import io
import json
import threading
import time

import psycopg2
import psycopg2.errorcodes
import psycopg2.extras


def emit(check, **observed):
    print(json.dumps({"check": check, **observed}), flush=True)


conn = psycopg2.connect("")
conn.autocommit = False
table = "psy_%d" % int(time.time() * 1000 % 1e9)

with conn.cursor() as cur:
    cur.execute("SELECT current_user, version() LIKE 'PostgreSQL%%', %s::int + 1", (41,))
    user, is_pg, answer = cur.fetchone()
    emit("connect", user=user, is_pg=is_pg, answer=answer, server_version=conn.server_version)

    cur.execute("CREATE TABLE %s (id int PRIMARY KEY, name text, amount numeric)" % table)
    cur.executemany(
        "INSERT INTO " + table + " VALUES (%s, %s, %s)",
        [(i, "row %d" % i, i * 0.5) for i in range(1, 501)],
    )
    psycopg2.extras.execute_values(cur, "INSERT INTO " + table + " VALUES %s", [(i, None, None) for i in range(501, 1001)])
    conn.commit()
    cur.execute("SELECT count(*), count(name), sum(amount)::text FROM " + table)
    emit("executemany", counts=list(cur.fetchone()))

# A named cursor is a server-side cursor: DECLARE ... CURSOR, then FETCH FORWARD itersize.
with conn.cursor(name="big_scan") as cur:
    cur.itersize = 128
    cur.execute("SELECT id FROM " + table + " ORDER BY id")
    ids = [r[0] for r in cur]
    emit("server_side_cursor", rows=len(ids), first=ids[0], last=ids[-1], total=sum(ids))
conn.commit()

with conn.cursor() as cur:
    out = io.StringIO()
    cur.copy_expert("COPY (SELECT id, name FROM %s WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)" % table, out)
    incoming = io.StringIO("".join("%d,copied %d,%d\n" % (i, i, i) for i in range(2001, 3001)))
    cur.copy_expert("COPY %s FROM STDIN WITH (FORMAT csv)" % table, incoming)
    conn.commit()
    cur.execute("SELECT count(*) FROM %s WHERE id > 2000" % table)
    emit("copy_expert", out=out.getvalue(), copied_in=cur.fetchone()[0])

with conn.cursor() as cur:
    errors = {}
    for label, sql in [
        ("undefined_table", "SELECT * FROM no_such_table_psy"),
        ("division_by_zero", "SELECT 1 / 0"),
        ("unique_violation", "INSERT INTO %s VALUES (1, 'dup', 0)" % table),
    ]:
        try:
            cur.execute(sql)
            errors[label] = None
        except psycopg2.Error as e:
            errors[label] = {"pgcode": e.pgcode, "class": type(e).__name__, "position": e.diag.statement_position}
            conn.rollback()
    emit("errors", errors=errors)

# conn.cancel() sends a CancelRequest from another thread while pg_sleep runs.
with conn.cursor() as cur:
    timer = threading.Timer(0.3, conn.cancel)
    timer.start()
    started = time.time()
    try:
        cur.execute("SELECT pg_sleep(30)")
        emit("cancel", pgcode=None)
    except psycopg2.Error as e:
        conn.rollback()
        emit("cancel", pgcode=e.pgcode, name=psycopg2.errorcodes.lookup(e.pgcode), seconds=round(time.time() - started, 2))

with conn.cursor() as cur:
    cur.execute("DROP TABLE " + table)
    conn.commit()
    cur.execute("SELECT 'still usable'")
    emit("after", value=cur.fetchone()[0])
conn.close()
