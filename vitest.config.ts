import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string) => fileURLToPath(new URL(`./${pkg}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against sources so `vitest` never depends on a stale `dist/`.
    alias: {
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
    reporters: process.env.CI ? ['default', 'junit'] : ['default'],
    outputFile: { junit: 'test-results/junit.xml' },
  },
});
