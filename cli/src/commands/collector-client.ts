import { readFileSync } from 'node:fs';
import type { Command } from 'commander';

/** `--collector <url>` for commands that talk to a running collector: env PGWARDEN_COLLECTOR_URL, else loopback. */
export const withCollectorOption = (c: Command): Command =>
  c.option(
    '--collector <url>',
    'collector base URL (or env PGWARDEN_COLLECTOR_URL)',
    process.env.PGWARDEN_COLLECTOR_URL ?? 'http://127.0.0.1:8080',
  );

/**
 * A bearer token from `--token-file`, else from the environment variable `envVar`, never an argument (`ps` would
 * show it); undefined when neither gives one. An unreadable or empty file is an Error naming the flag.
 */
export function bearerToken(tokenFile: string | undefined, envVar: string): string | undefined {
  if (tokenFile) {
    let text: string;
    try {
      text = readFileSync(tokenFile, 'utf8');
    } catch (err) {
      throw new Error(`cannot read --token-file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    const t = text.trim();
    if (!t) throw new Error(`--token-file ${tokenFile} is empty`);
    return t;
  }
  return process.env[envVar]?.trim() || undefined;
}
