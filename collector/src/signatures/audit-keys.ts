import type { KeyObject } from 'node:crypto';
import { auditVerifyKey } from '@pgwarden/policy';
import { parse as parseYaml } from 'yaml';
import { WatchedFile } from '../config/watched-file.js';
import { CollectorError } from '../errors.js';

/**
 * The public halves of the sidecars' audit signing keys (`--audit-keys`): what the collector judges `audit.checkpoint`
 * events against. A YAML or JSON document:
 *
 * ```yaml
 * keys:
 *   - name: agents-2026          # shown in verification output and logs
 *     publicKey: |               # PEM, from `pgwarden audit keygen`
 *       -----BEGIN PUBLIC KEY-----
 *       ...
 *     namespaces: [agents]       # optional: the key vouches only for events of these namespaces
 * ```
 */
export interface AuditKey {
  name: string;
  /** ed25519KeyId of the key: what a checkpoint names. */
  keyId: string;
  key: KeyObject;
  /** Absent: events of any namespace (and events without one). */
  namespaces?: readonly string[];
}

export interface AuditKeyring {
  readonly keys: readonly AuditKey[];
  readonly byId: ReadonlyMap<string, AuditKey>;
}

/** No keys configured: checkpoints are counted but not judged. */
export const NO_KEYS: AuditKeyring = { keys: [], byId: new Map() };

export function keyringOf(keys: readonly AuditKey[]): AuditKeyring {
  return { keys, byId: new Map(keys.map((k) => [k.keyId, k])) };
}

/** Whether `key` may vouch for an event of `namespace` (null: an event without one). */
export function keyAllows(key: AuditKey, namespace: string | null): boolean {
  return key.namespaces === undefined || (namespace !== null && key.namespaces.includes(namespace));
}

const TOP_FIELDS = new Set(['keys']);
const KEY_FIELDS = new Set(['name', 'publicKey', 'namespaces']);

/**
 * Parses an audit keys file. Throws COLLECTOR_BAD_CONFIG naming the entry on anything it cannot trust: unknown
 * fields (so a `privateKey:` is refused, not ignored), a key that is not an Ed25519 public key (a private key
 * included: auditVerifyKey refuses it), a name or key listed twice, an empty list. Messages never quote key text.
 */
export function parseAuditKeys(text: string, source: string): AuditKeyring {
  const bad = (msg: string) => new CollectorError('COLLECTOR_BAD_CONFIG', `audit keys file ${source}: ${msg}`);
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw bad(`not YAML/JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw bad('must be an object with a list `keys` of {name, publicKey, namespaces?}');
  const extra = Object.keys(doc).filter((k) => !TOP_FIELDS.has(k));
  if (extra.length > 0) throw bad(`unknown field(s) ${extra.join(', ')}`);
  const list = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(list) || list.length === 0) throw bad('`keys` must list at least one {name, publicKey}');
  const names = new Set<string>();
  const ids = new Map<string, string>();
  const keys = list.map((raw, i): AuditKey => {
    const o = raw as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw bad(`entry ${i} is not an object`);
    const unknown = Object.keys(o).filter((k) => !KEY_FIELDS.has(k));
    if (unknown.length > 0) throw bad(`entry ${i}: unknown field(s) ${unknown.join(', ')}`);
    if (typeof o.name !== 'string' || o.name.length === 0 || o.name.length > 256)
      throw bad(`entry ${i}: name must be a non-empty string`);
    const name = o.name;
    if (names.has(name)) throw bad(`entry ${i}: the name ${name} appears twice`);
    names.add(name);
    if (typeof o.publicKey !== 'string') throw bad(`entry ${i} (${name}): publicKey must be a PEM string`);
    let parsed: ReturnType<typeof auditVerifyKey>;
    try {
      parsed = auditVerifyKey(o.publicKey);
    } catch (err) {
      throw bad(`entry ${i} (${name}): publicKey: ${(err as Error).message.split('\n')[0]}`);
    }
    const twin = ids.get(parsed.keyId);
    if (twin !== undefined) throw bad(`entry ${i} (${name}): the same key is listed as ${twin}`);
    ids.set(parsed.keyId, name);
    const namespaces = o.namespaces;
    if (
      namespaces !== undefined &&
      (!Array.isArray(namespaces) ||
        namespaces.length === 0 ||
        namespaces.length > 256 ||
        !namespaces.every((n) => typeof n === 'string' && n.length > 0 && n.length <= 253))
    )
      throw bad(`entry ${i} (${name}): namespaces must be a non-empty list of namespace names (omit it for all)`);
    return {
      name,
      keyId: parsed.keyId,
      key: parsed.key,
      ...(namespaces ? { namespaces: [...(namespaces as string[])] } : {}),
    };
  });
  return keyringOf(keys);
}

/**
 * The keys file, re-read when it changes (WatchedFile). A replacement that does not parse leaves the previous keys
 * in force, unlike a token file: dropping every key would turn each later checkpoint into `unverified` and hide
 * the very tampering the keys are there to show. The owner reports the error (log, metric).
 */
export function watchAuditKeys(path: string): WatchedFile<AuditKeyring> {
  return new WatchedFile(path, 'audit keys file', (text) => parseAuditKeys(text, path));
}
