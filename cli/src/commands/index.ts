import type { Command } from 'commander';

/** Each subcommand lives in its own module; add one import and one line here. */
export function registerCommands(program: Command): void {
  void program;
}
