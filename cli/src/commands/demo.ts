import type { Command } from 'commander';
import { defaultPolicyFiles, runDemo } from '../demo/run-demo.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the sidecar in front of an embedded PostgreSQL (PGlite) seeded with PII; needs only Node.js')
    .option('--port <port>', 'first port to try for the sidecar (the next nine are tried too)', '5432')
    .option(
      '--policy <file...>',
      'policy/masking YAML files (default: examples/analyst-readonly.yaml + masking-pii.yaml)',
    )
    .option('--allow-all', 'no policy: allow and audit every statement')
    .action(async (opts: { port: string; policy?: string[]; allowAll?: boolean }) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        program.error(`--port must be 1-65535, got "${opts.port}"`);
      const policyFiles = opts.allowAll ? [] : (opts.policy ?? defaultPolicyFiles());
      await runDemo({ port, policyFiles, out: process.stdout });
      process.exit(0);
    });
}
