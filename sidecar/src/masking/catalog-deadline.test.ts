/**
 * The catalog cache's per-statement deadline against a real PostgreSQL behind a relay that slows the catalog
 * connection: every wait one statement makes (its policy check's, then masking's) draws on one budget of
 * statementTimeoutMs, a check still running past it is left to finish in the background, and the catalog counts as
 * failing until it has.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/index.js';
import { StallingRelay } from '../../../test/harness/stalling-relay.js';
import { CatalogCache, type CatalogEvent } from './catalog-cache.js';
import { upstreamCatalogQuery } from './catalog-connection.js';
import { catalogFailureCause, MaskingIoError } from './errors.js';

const creds = { username: ROLES.scram.user, password: ROLES.scram.password };
const TIMEOUT_MS = 2500;
/**
 * Each way: a catalog query's round trip takes twice this, within the timeout alone with ~1 s to spare (a loaded CI
 * machine), and long enough that one budget and two are told apart by more than timer jitter.
 */
const DELAY_MS = 700;
let relay: StallingRelay;

beforeAll(async () => {
  relay = new StallingRelay({ host: inject('pg').host, port: inject('pg').port });
  await relay.start();
});
afterAll(async () => {
  await relay?.stop();
});

describe('the catalog wait of one statement', () => {
  it('is bounded by the timeout in all, over every check it waits for, and the check goes on after it', async () => {
    const query = upstreamCatalogQuery(
      { host: '127.0.0.1', port: relay.port, database: inject('pg').database, sslmode: 'disable' },
      creds,
      { queryTimeoutMs: TIMEOUT_MS },
    );
    const events: CatalogEvent[] = [];
    const cache = new CatalogCache(query, { statementTimeoutMs: TIMEOUT_MS, onEvent: (e) => events.push(e) });
    try {
      await cache.refresh();
      expect(cache.loaded).toBe(true);
      const generation = cache.generation;
      relay.slow(relay.upstreamPorts(), DELAY_MS);
      // The last check is over verifyMs (1 s) old, so a statement resting on an unknown name waits for one.
      await new Promise((r) => setTimeout(r, 1100));
      const statement = {};
      const t0 = Date.now();
      await cache.checkForUnknownName(statement);
      const first = Date.now() - t0;
      expect(first).toBeGreaterThanOrEqual(2 * DELAY_MS - 50);
      // Then masking's wait for the same statement: a reload (eleven slowed queries) gets what is left of its budget.
      cache.invalidate();
      const err = await cache.ensure(statement).then(
        () => undefined,
        (e: unknown) => e,
      );
      const took = Date.now() - t0;
      expect(err).toBeInstanceOf(MaskingIoError);
      expect((err as MaskingIoError).code).toBe('PGW_MASK_CATALOG_UNAVAILABLE');
      expect(catalogFailureCause((err as MaskingIoError).cause)).toBe('timeout');
      // One budget: about one timeout for both waits (each with its own: the first wait plus a whole timeout; no
      // bound: eleven round trips more). Half the first wait is the margin either way.
      expect(took).toBeLessThan(TIMEOUT_MS + first / 2);
      expect(cache.failing).toBe(true);
      expect(events.filter((e) => e.type === 'catalog.failed')).toHaveLength(1);
      // A new statement meanwhile is refused at once, not after another wait.
      const t1 = Date.now();
      await expect(cache.ensure({})).rejects.toThrow(/did not answer in time/);
      expect(Date.now() - t1).toBeLessThan(TIMEOUT_MS / 2);
      // The reload was not abandoned: it completes (the relay fast again, so as not to wait out ten slowed queries),
      // and the catalog answers again.
      relay.slow(relay.upstreamPorts(), 0);
      const deadline = Date.now() + 60_000;
      while (cache.generation === generation && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(cache.generation).toBe(generation + 1);
      expect(cache.failing).toBe(false);
      expect(events.at(-1)?.type).toBe('catalog.recovered');
    } finally {
      relay.slow(relay.upstreamPorts(), 0);
      query.close();
    }
  }, 120_000);
});
