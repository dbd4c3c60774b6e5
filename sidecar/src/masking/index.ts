export { CatalogCache, type CatalogCacheOptions, type CatalogEvent, type CatalogQuery } from './catalog-cache.js';
export {
  type CatalogConnectionOptions,
  DEFAULT_CATALOG_QUERY_TIMEOUT_MS,
  upstreamCatalogQuery,
} from './catalog-connection.js';
export { CatalogMetrics } from './catalog-metrics.js';
export { createRowTransformer, type MaskingCounters } from './data-row-transformer.js';
export {
  CATALOG_UNAVAILABLE_SQLSTATE,
  catalogFailureCause,
  catalogRefusal,
  MaskingIoError,
  type MaskingIoErrorCode,
} from './errors.js';
export { createMasker, type Masker, type MaskerOptions, type MaskingCheck, type MaskingSource } from './masker.js';
export { maskingNeedsCatalog, type PolicyMaskingOptions, withPolicyMasking } from './policy-masking.js';
export { keyResolverFromEnv, secretFileKeyResolver } from './secret-key-files.js';
export { withMasking } from './with-masking.js';
