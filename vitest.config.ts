import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string) => fileURLToPath(new URL(`./${pkg}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against sources so `vitest` never depends on a stale `dist/`.
    alias: {
      // Subpaths before their package's own entry: a prefix alias would map them to collector/src/index.ts/client.
      '@pgwarden/collector/client': fileURLToPath(new URL('./collector/src/client.ts', import.meta.url)),
      '@pgwarden/policy/look-alike-skeleton': fileURLToPath(
        new URL('./policy/src/engine/look-alike-skeleton.ts', import.meta.url),
      ),
      '@pgwarden/policy/oidc': fileURLToPath(new URL('./policy/src/oidc/index.ts', import.meta.url)),
      '@pgwarden/policy': src('policy'),
      '@pgwarden/sidecar': src('sidecar'),
      '@pgwarden/collector': src('collector'),
      '@pgwarden/operator': src('operator'),
    },
  },
  test: {
    include: ['{policy,sidecar,collector,operator,cli}/src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/harness/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default is one worker per core but one, so a two-core CI machine ran every file in one worker, and
    // the suite took 9–10 minutes while mostly waiting on PostgreSQL, nats-server, child processes and chromium.
    // Two workers overlap those waits. Files are isolated from each other: each starts its own nats-server, makes
    // its own databases on the shared cluster, and takes ports from its own slice (test/harness/ports.ts).
    maxWorkers: 2,
    // Each file used to import the sources afresh in its worker (vitest's default isolation): about a quarter of the
    // suite's time on two cores went to those imports (236 s of "import" over 216 files). Files share a worker's
    // module cache instead; they already share nothing else: no test mocks modules, stubs globals or fakes timers,
    // and each makes its own servers, databases, registries and ports.
    isolate: false,
    reporters: process.env.CI ? ['default', 'junit'] : ['default'],
    outputFile: { junit: 'test-results/junit.xml' },
  },
});
