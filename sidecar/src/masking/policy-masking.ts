import type { KeyResolver, MaskingSettings, RenderedPolicy } from '@pgwarden/policy';
import type { ProxyHooks } from '../proxy/hooks.js';
import type { Credentials, UpstreamTarget } from '../upstream/connect.js';
import { CatalogCache, type CatalogEvent } from './catalog-cache.js';
import { DEFAULT_CATALOG_QUERY_TIMEOUT_MS, upstreamCatalogQuery } from './catalog-connection.js';
import { createMasker } from './masker.js';
import { withMasking } from './with-masking.js';

export interface PolicyMaskingOptions {
  /** The listener's policy now (hot reload swaps it). */
  policy: () => RenderedPolicy | undefined;
  /** The listener's upstream database: the catalog is read from it over the sidecar's own connection. */
  upstream: UpstreamTarget;
  /** Read at each (re)connect, so rotated Secrets apply. */
  credentials: Credentials | (() => Credentials);
  resolveKey?: KeyResolver;
  catalogMaxAgeMs?: number;
  /** See CatalogCacheOptions.verifyMs (default 1 s). */
  catalogVerifyMs?: number;
  /**
   * `--catalog-query-timeout`: see CatalogConnectionOptions.queryTimeoutMs and CatalogCacheOptions.statementTimeoutMs
   * (default 5 s).
   */
  catalogQueryTimeoutMs?: number;
  /** The catalog's failures and recoveries (logs, metrics). */
  onCatalogEvent?: (e: CatalogEvent) => void;
  /**
   * Whether the policy's decisions read the whole catalog snapshot (function rules); with masking's column rules, what
   * makes a load read more than the code operators, aggregates, casts and writes run (CatalogCacheOptions.whole).
   * Default: they do.
   */
  policyReadsCatalog?: (p: RenderedPolicy) => boolean;
}

/** Whether `p`'s masking reads the catalog: column rules do (detectors alone never wait for it; see Masker.check). */
export function maskingNeedsCatalog(p: RenderedPolicy): boolean {
  return p.maskingRules.some((r) => (r.spec.columns?.length ?? 0) > 0);
}

/**
 * Masking for a governed listener: every session gets a masker fed by the listener's current policy (its
 * MaskingRules and spec.masking), sharing one catalog cache per database. Wrap the policy hooks with this
 * before audit, so audit sees scrubbed records. close() ends the catalog connection. `catalog` is that cache, which
 * the policy's decisions use too (user functions in `t.f` and behind unqualified names).
 */
export function withPolicyMasking(
  hooks: ProxyHooks,
  opts: PolicyMaskingOptions,
): ProxyHooks & { close(): void; catalog: CatalogCache } {
  const query = upstreamCatalogQuery(opts.upstream, opts.credentials, { queryTimeoutMs: opts.catalogQueryTimeoutMs });
  const catalog = new CatalogCache(query, {
    maxAgeMs: opts.catalogMaxAgeMs,
    verifyMs: opts.catalogVerifyMs,
    // One bound for the whole of a statement's catalog work, however many queries its checks need.
    statementTimeoutMs: Math.max(1, Math.round(opts.catalogQueryTimeoutMs ?? DEFAULT_CATALOG_QUERY_TIMEOUT_MS)),
    onEvent: opts.onCatalogEvent,
    whole: () => {
      const p = opts.policy();
      return p === undefined || maskingNeedsCatalog(p) || (opts.policyReadsCatalog?.(p) ?? true);
    },
  });
  const source = () => {
    const p = opts.policy();
    if (!p) return undefined;
    return { version: p.hash, rules: p.maskingRules, settings: p.policy.spec.masking as MaskingSettings | undefined };
  };
  const wrapped = withMasking(hooks, (info, searchPath) =>
    createMasker({ source, catalog, subject: info.identity, resolveKey: opts.resolveKey, searchPath }),
  );
  return Object.assign(wrapped, { close: () => query.close(), catalog });
}
