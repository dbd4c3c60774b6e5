export { CatalogCache, type CatalogCacheOptions, type CatalogQuery } from './catalog-cache.js';
export { upstreamCatalogQuery } from './catalog-connection.js';
export { createRowTransformer, type MaskingCounters } from './data-row-transformer.js';
export { MaskingIoError, type MaskingIoErrorCode } from './errors.js';
export { createMasker, type Masker, type MaskerOptions, type MaskingSource } from './masker.js';
export { type PolicyMaskingOptions, withPolicyMasking } from './policy-masking.js';
export { keyResolverFromEnv, secretFileKeyResolver } from './secret-key-files.js';
export { withMasking } from './with-masking.js';
