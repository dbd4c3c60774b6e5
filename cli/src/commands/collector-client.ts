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

/**
 * Exit status 1: the collector answered and refused (or found nothing). 2: the command could not run at all.
 * 3: it was done, but not confirmed in time (`pgwarden control terminate`: no sidecar reported ending the session).
 */
export class CollectorCliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 3,
  ) {
    super(message);
  }
}

/** A collector and the approver token to present to it. */
export interface ApproverTarget {
  collector: string;
  token: string;
}

/** The approver token (`--token-file` or env PGWARDEN_APPROVER_TOKEN); without one the command cannot run. */
function approverToken(tokenFile: string | undefined): string {
  let t: string | undefined;
  try {
    t = bearerToken(tokenFile, 'PGWARDEN_APPROVER_TOKEN');
  } catch (err) {
    throw new CollectorCliError((err as Error).message, 2);
  }
  if (!t) throw new CollectorCliError('no approver token: set PGWARDEN_APPROVER_TOKEN or give --token-file', 2);
  return t;
}

/** One API call as the approver: the answer's JSON, or a CollectorCliError with the collector's code and message. */
export async function callCollector(
  target: ApproverTarget,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<unknown> {
  let r: Response;
  try {
    r = await fetch(new URL(path, target.collector), {
      method,
      headers: {
        authorization: `Bearer ${target.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new CollectorCliError(
      `cannot reach the collector at ${target.collector}: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
      2,
    );
  }
  const text = await r.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CollectorCliError(`the collector answered ${r.status} with something other than JSON`, 2);
  }
  if (!r.ok) {
    const e = (parsed as { error?: { code?: string; message?: string } }).error;
    throw new CollectorCliError(`collector answered ${r.status} ${e?.code ?? ''}: ${e?.message ?? text}`, 1);
  }
  return parsed;
}

/** The options every approver command takes (withApproverOptions). */
export interface ApproverOptions {
  collector: string;
  tokenFile?: string;
  json?: boolean;
}

/** `--collector`, `--token-file` and `--json`, for commands an approver runs. */
export const withApproverOptions = (c: Command): Command =>
  withCollectorOption(c)
    .option('--token-file <file>', 'file holding your approver token (default: env PGWARDEN_APPROVER_TOKEN)')
    .option('--json', 'print JSON as the API returns it');

/**
 * An approver command's action: `fn` gets the options (its first argument as `arg`) and the target, and returns
 * what to print. A failure becomes `<name>: <message>` on stderr and exit status 1 (refused) or 2 (not asked).
 */
export function approverAction(
  name: string,
  fn: (o: ApproverOptions & Record<string, unknown> & { arg?: string }, target: ApproverTarget) => Promise<string>,
) {
  return async (...args: unknown[]) => {
    // Commander passes the positional arguments first, then the options, then the command.
    const o = args[args.length - 2] as ApproverOptions & Record<string, unknown>;
    const positional = args.slice(0, -2) as string[];
    try {
      const target = { collector: o.collector, token: approverToken(o.tokenFile) };
      process.stdout.write(await fn({ ...o, arg: positional[0] }, target));
    } catch (err) {
      process.stderr.write(`${name}: ${(err as Error).message}\n`);
      process.exitCode = err instanceof CollectorCliError ? err.exitCode : 2;
    }
  };
}
