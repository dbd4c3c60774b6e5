-- One single-row UPDATE per transaction, outside any transaction block: what guardrails.maxRowsAffected guards.
\set aid random(1, 100000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
