// What `make bench` measures: scenarios (pgbench workloads) × legs (paths to PostgreSQL).
// Later issues add legs here (e.g. a policy, masked columns, a NATS audit sink): one entry each.
import { fileURLToPath } from 'node:url';

const ROWS_1000 = fileURLToPath(new URL('./rows1000.sql', import.meta.url));
const POLICY_PLAIN = fileURLToPath(new URL('./policy-plain.yaml', import.meta.url));
const POLICY_MASKED = fileURLToPath(new URL('./policy-masked.yaml', import.meta.url));
const POLICY_WRITES = fileURLToPath(new URL('./policy-writes.yaml', import.meta.url));
const POLICY_WRITES_GUARDED = fileURLToPath(new URL('./policy-writes-guarded.yaml', import.meta.url));
const UPDATE_1 = fileURLToPath(new URL('./update1.sql', import.meta.url));

/**
 * kind: 'direct' connects pgbench straight to PostgreSQL; 'pipe' runs bench/bare-pipe.mjs;
 * 'proxy' runs the sidecar's proxy without audit (bench/proxy-no-audit.mjs);
 * 'native' compiles and runs bench/native-pipe.c; 'sidecar' runs `bin/pgwarden sidecar` with the base flags (listen, upstream, credentials, audit file) + sidecarArgs.
 * audit: 'nats' replaces the audit file with the JetStream sink (a throwaway nats-server that bench/run.mjs starts,
 * plus a spool dir), the production path for sidecars in a cluster.
 */
export const LEGS = [
  { name: 'direct', kind: 'direct' },
  { name: 'bare-pipe', kind: 'pipe' },
  // bench/native-pipe.c, compiled by the bench: the same byte pipe written natively. A reference for what the Node
  // floor itself costs; left out (with the reason printed) where no C compiler is installed.
  { name: 'native-pipe', kind: 'native' },
  // The sidecar's proxy with no audit trail (bench/proxy-no-audit.mjs): splits the sidecar's cost against the bare
  // pipe into proxying (this leg) and auditing (sidecar ÷ this leg).
  { name: 'proxy-no-audit', kind: 'proxy' },
  { name: 'sidecar', kind: 'sidecar', sidecarArgs: [] },
  // The same sidecar signing its chains (--audit-signing-key, a key the bench generates): what signed checkpoints
  // cost next to `sidecar` (one Ed25519 signature per active session per second, none per statement).
  { name: 'sidecar-signed', kind: 'sidecar', signed: true, sidecarArgs: [] },
  // The same sidecar auditing to NATS JetStream instead of a file; target: within 10 % of `sidecar` (report.mjs).
  { name: 'sidecar-nats', kind: 'sidecar', audit: 'nats', sidecarArgs: [] },
  // The same sidecar with TLS to PostgreSQL (sslmode=require), as production upstreams should be: what the upstream
  // encryption adds next to `sidecar`. pgbench still talks plain TCP to the sidecar, as agents do on loopback.
  { name: 'sidecar-tls', kind: 'sidecar', upstreamSslmode: 'require', sidecarArgs: [] },
  // Masking (docs/masking.md): the same policy without and with a MaskingRule on 2 of rows1000.sql's 4 columns.
  { name: 'policy', kind: 'sidecar', sidecarArgs: ['--policy', POLICY_PLAIN] },
  { name: 'masked', kind: 'sidecar', sidecarArgs: ['--policy', POLICY_MASKED] },
  // guardrails.maxRowsAffected (docs/protocol.md, guarded writes): the same write policy without and with the cap.
  // A guarded write outside a transaction costs a hidden BEGIN ahead of it and a COMMIT after it (a round trip).
  { name: 'writes', kind: 'sidecar', sidecarArgs: ['--policy', POLICY_WRITES] },
  { name: 'writes-guarded', kind: 'sidecar', sidecarArgs: ['--policy', POLICY_WRITES_GUARDED] },
];

/** The leg every proxy leg is compared with, besides `direct`. */
export const BASELINE_PROXY = 'bare-pipe';

export const SCENARIOS = [
  { name: 'select-simple-c1', pgbench: ['-S', '-M', 'simple', '-c', '1'] },
  { name: 'select-extended-c1', pgbench: ['-S', '-M', 'extended', '-c', '1'] },
  { name: 'select-prepared-c1', pgbench: ['-S', '-M', 'prepared', '-c', '1'] },
  { name: 'select-simple-c8', pgbench: ['-S', '-M', 'simple', '-c', '8', '-j', '2'] },
  { name: 'select-extended-c8', pgbench: ['-S', '-M', 'extended', '-c', '8', '-j', '2'] },
  { name: 'select-prepared-c8', pgbench: ['-S', '-M', 'prepared', '-c', '8', '-j', '2'] },
  { name: 'rows1000-c1', pgbench: ['-f', ROWS_1000, '-M', 'extended', '-c', '1'] },
  { name: 'rows1000-c8', pgbench: ['-f', ROWS_1000, '-M', 'extended', '-c', '8', '-j', '2'] },
  { name: 'update-simple-c4', pgbench: ['-f', UPDATE_1, '-M', 'simple', '-c', '4', '-j', '2'] },
  { name: 'update-extended-c4', pgbench: ['-f', UPDATE_1, '-M', 'extended', '-c', '4', '-j', '2'] },
];
