-- A 1000-row result (~130 kB on the wire): the case where a proxy's per-row work shows.
\set a random(1, 99000)
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid BETWEEN :a AND :a + 999;
