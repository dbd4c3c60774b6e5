import type { Command } from 'commander';

type Register = (program: Command) => void;

/**
 * Each subcommand lives in its own module, loaded only when it runs: the sidecar must not pay for the Kubernetes
 * client, PGlite or the collector at start (every command module loaded eagerly cost ~1.4 s of CPU per start).
 * Add one line here per subcommand, in the order `--help` lists them.
 */
const commands: Record<string, () => Promise<Register>> = {
  sidecar: async () => (await import('./sidecar.js')).registerSidecar,
  policy: async () => (await import('./policy.js')).registerPolicy,
  collector: async () => (await import('./collector.js')).registerCollector,
  audit: async () => (await import('./audit.js')).registerAudit,
  approvals: async () => (await import('./approvals.js')).registerApprovals,
  control: async () => (await import('./control.js')).registerControl,
  findings: async () => (await import('./findings.js')).registerFindings,
  operator: async () => (await import('./operator.js')).registerOperator,
  inject: async () => (await import('./inject.js')).registerInject,
  render: async () => (await import('./render.js')).registerRender,
  demo: async () => (await import('./demo.js')).registerDemo,
  'nats-reloader': async () => (await import('./nats-reloader.js')).registerNatsReloader,
};

/** Registers the subcommand named in argv, or every subcommand when none is named (top-level help, typos). */
export async function registerCommands(program: Command, argv: string[]): Promise<void> {
  const name = argv.slice(2).find((a) => !a.startsWith('-'));
  const load = name && name !== 'help' ? commands[name] : undefined;
  const selected = load ? [load] : Object.values(commands);
  for (const register of await Promise.all(selected.map((l) => l()))) register(program);
}
