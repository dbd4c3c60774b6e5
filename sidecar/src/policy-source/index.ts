export { compilePolicyFiles } from './compile-policy-files.js';
export { PolicySourceError, type PolicySourceErrorCode } from './errors.js';
export {
  type CompiledPolicy,
  createPolicySource,
  type LoadedPolicy,
  type PolicySource,
  type PolicySourceEvent,
  type PolicySourceOptions,
} from './policy-source.js';
export { type PolicyFile, type PolicyFileSet, readPolicyFiles } from './read-policy-files.js';
