"""psycopg2's conn.reset() (ABORT when a transaction is open, then DISCARD ALL) through a governed sidecar.

Connection from the libpq environment. Prints one JSON line per check, observations only: discard-all.test.ts
asserts on them.
"""
import json

import psycopg2


def emit(check, **observed):
    print(json.dumps({"check": check, **observed}), flush=True)


def session(cur):
    cur.execute("SELECT current_user, current_setting('statement_timeout'), current_setting('search_path')")
    return list(cur.fetchone())


conn = psycopg2.connect("")
# Autocommit: the SET below stays (inside psycopg2's own transaction the ABORT of reset() would undo it).
conn.autocommit = True
with conn.cursor() as cur:
    emit("before", session=session(cur))
    cur.execute("SET statement_timeout = 0")
conn.reset()
with conn.cursor() as cur:
    emit("after_reset", session=session(cur))
# In a failed transaction: reset() sends ABORT first (reset() itself may have turned autocommit off again).
conn.rollback()
conn.autocommit = False
with conn.cursor() as cur:
    try:
        cur.execute("SELECT 1 / 0")
    except psycopg2.Error as e:
        emit("failed_transaction", pgcode=e.pgcode)
conn.reset()
with conn.cursor() as cur:
    emit("after_failed_reset", session=session(cur))
conn.close()
