/** Polls `check` every 50 ms until it holds; throws after `ms`, naming `what` it waited for. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms = 15_000,
  what = 'condition not met',
): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
