import { Command } from 'commander';
import { registerCommands } from './commands/index.js';

const program = new Command('pgwarden')
  .description('Policy-enforcing, auditing PostgreSQL sidecar for autonomous agents')
  .version('0.1.0')
  .showHelpAfterError();
await registerCommands(program, process.argv);
await program.parseAsync(process.argv);
