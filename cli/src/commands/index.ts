import type { Command } from 'commander';
import { registerAudit } from './audit.js';
import { registerCollector } from './collector.js';
import { registerDemo } from './demo.js';
import { registerInject } from './inject.js';
import { registerOperator } from './operator.js';
import { registerPolicy } from './policy.js';
import { registerRender } from './render.js';
import { registerSidecar } from './sidecar.js';

/** Each subcommand lives in its own module; add one import and one line here. */
export function registerCommands(program: Command): void {
  void program;
  registerCollector(program);
  registerAudit(program);
  registerPolicy(program);
  registerDemo(program);
  registerSidecar(program);
  registerOperator(program);
  registerInject(program);
  registerRender(program);
}
