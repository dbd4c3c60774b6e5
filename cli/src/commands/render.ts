import { PolicyFilesError, readPolicyFiles, renderConfigMaps, renderConfigMapsYaml } from '@pgwarden/operator';
import { PolicyError } from '@pgwarden/policy';
import type { Command } from 'commander';

export function registerRender(program: Command): void {
  program
    .command('render')
    .description('print the ConfigMaps the operator would write for these policies (same renderer, same bytes)')
    .requiredOption('--policies <path>', 'DatabaseAccessPolicy/MaskingRule YAML file or directory')
    .option('-n, --namespace <ns>', 'namespace for objects without one', 'default')
    .action(async (o) => {
      try {
        process.stdout.write(renderConfigMapsYaml(renderConfigMaps(await readPolicyFiles(o.policies), o.namespace)));
      } catch (err) {
        if (err instanceof PolicyFilesError || err instanceof PolicyError) {
          process.stderr.write(`pgwarden render: ${err.message}\n`);
          process.exitCode = 1;
          return;
        }
        throw err;
      }
    });
}
