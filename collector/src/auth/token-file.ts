import { createHash, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Approver, OidcSubject } from '@pgwarden/policy';
import { parse as parseYaml } from 'yaml';
import { WatchedFile } from '../config/watched-file.js';
import { CollectorError } from '../errors.js';

/**
 * Who a bearer token belongs to, for the collector's HTTP API: `approvers` decide held statements (and may read the
 * audit trail), `readers` may read the audit trail. Both files have one shape.
 */
export type TokenFileKind = 'approvers' | 'readers';

/**
 * A person a token file names; `namespaces` (absent: all) limits which sessions they may read. `oidc` and
 * `serviceAccounts` (approvers) are the other identities they hold: a request made under one of them is their own,
 * and they may not decide it (policy four-eyes.ts).
 */
export interface TokenHolder extends Approver {
  namespaces?: string[];
}

interface NamedToken extends TokenHolder {
  /** Absent for someone bound to an OIDC subject only. */
  digest?: Buffer;
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;
const FIELDS = new Set(['name', 'groups', 'tokenSha256', 'namespaces', 'oidc', 'serviceAccounts']);
const DNS_NAME = '[a-z0-9]([-a-z0-9.]*[a-z0-9])?';
const SERVICE_ACCOUNT = new RegExp(`^${DNS_NAME}/${DNS_NAME}$`);

/** `oidc: [{issuer, subject}]`: each a non-empty string, nothing else. */
function parseOidcSubjects(v: unknown, bad: (msg: string) => Error): OidcSubject[] {
  const ok = (x: unknown) => typeof x === 'string' && x.trim().length > 0 && x.length <= 1024;
  if (!Array.isArray(v) || v.length > 64) throw bad('oidc must be a list of {issuer, subject}');
  return v.map((o) => {
    if (
      !o ||
      typeof o !== 'object' ||
      Array.isArray(o) ||
      Object.keys(o).some((k) => k !== 'issuer' && k !== 'subject')
    )
      throw bad('oidc entries are {issuer, subject}');
    if (!ok(o.issuer) || !ok(o.subject)) throw bad('oidc entries need a non-empty issuer and subject');
    return { issuer: o.issuer, subject: o.subject };
  });
}

export const sha256Hex = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

/**
 * Parses an approvers or readers file: a YAML (or JSON) list of `{name, groups?, tokenSha256?, oidc?, ...}`, each
 * with a token hash, an OIDC binding, or both. Throws on anything
 * else, including unknown fields, so a plain `token:` put there by mistake is refused rather than ignored.
 */
export function parseTokenFile(text: string, source: string, kind: TokenFileKind = 'approvers'): NamedToken[] {
  const bad = (msg: string) => new CollectorError('COLLECTOR_BAD_CONFIG', `${kind} file ${source}: ${msg}`);
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw bad(`not YAML/JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (!Array.isArray(doc)) throw bad('must be a list of {name, groups, tokenSha256}');
  const seen = new Set<string>();
  return doc.map((raw, i) => {
    const o = raw as Record<string, unknown>;
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw bad(`entry ${i} is not an object`);
    const extra = Object.keys(o).filter((k) => !FIELDS.has(k));
    if (extra.length > 0) throw bad(`entry ${i}: unknown field(s) ${extra.join(', ')}`);
    if (typeof o.name !== 'string' || o.name.length === 0 || o.name.length > 256)
      throw bad(`entry ${i}: name must be a non-empty string`);
    const groups = o.groups ?? [];
    if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string' && g.length > 0 && g.length <= 256))
      throw bad(`entry ${i} (${o.name}): groups must be a list of non-empty strings`);
    const namespaces = o.namespaces;
    if (
      namespaces !== undefined &&
      (!Array.isArray(namespaces) ||
        namespaces.length > 256 ||
        !namespaces.every((n) => typeof n === 'string' && n.length > 0 && n.length <= 253))
    )
      throw bad(`entry ${i} (${o.name}): namespaces must be a list of namespace names`);
    const oidc =
      o.oidc === undefined ? undefined : parseOidcSubjects(o.oidc, (m) => bad(`entry ${i} (${o.name}): ${m}`));
    const serviceAccounts = o.serviceAccounts;
    if (
      serviceAccounts !== undefined &&
      (!Array.isArray(serviceAccounts) ||
        serviceAccounts.length > 256 ||
        !serviceAccounts.every((n) => typeof n === 'string' && SERVICE_ACCOUNT.test(n)))
    )
      throw bad(`entry ${i} (${o.name}): serviceAccounts must be a list of namespace/name`);
    // Someone who signs in only through the identity provider (an `oidc` binding) needs no static token.
    const hex = typeof o.tokenSha256 === 'string' ? o.tokenSha256.toLowerCase() : '';
    if (o.tokenSha256 === undefined && !oidc?.length)
      throw bad(`entry ${i} (${o.name}): needs tokenSha256, an oidc binding, or both`);
    if (o.tokenSha256 !== undefined && !HEX_SHA256.test(hex))
      throw bad(`entry ${i} (${o.name}): tokenSha256 must be 64 hex digits`);
    if (hex && seen.has(hex)) throw bad(`entry ${i} (${o.name}): the same token hash appears twice`);
    if (hex) seen.add(hex);
    return {
      name: o.name,
      groups: [...groups],
      ...(namespaces ? { namespaces: [...(namespaces as string[])] } : {}),
      ...(oidc ? { oidc } : {}),
      ...(serviceAccounts ? { serviceAccounts: [...(serviceAccounts as string[])] } : {}),
      ...(hex ? { digest: Buffer.from(hex, 'hex') } : {}),
    };
  });
}

export interface TokenFileEvents {
  loaded: [count: number];
  /** The file changed into something unreadable or invalid: every token is refused until it is fixed. */
  invalid: [message: string];
}

/**
 * An approvers or readers file, re-read whenever it changes (WatchedFile). Tokens are never held, only their
 * SHA-256.
 */
export class TokenFile extends EventEmitter<TokenFileEvents> {
  private readonly file: WatchedFile<NamedToken[]>;

  /** Reads the file once; throws on a missing or invalid file, so a bad flag fails at start-up. */
  constructor(
    readonly path: string,
    readonly kind: TokenFileKind = 'approvers',
  ) {
    super();
    this.file = new WatchedFile(path, `${kind} file`, (text) => parseTokenFile(text, path, kind));
    this.file.on('loaded', (tokens) => this.emit('loaded', tokens.length));
    this.file.on('invalid', (message) => this.emit('invalid', message));
  }

  /**
   * The person whose token is the `Authorization: Bearer` credential, or undefined. Every entry is compared (in
   * constant time), so the answer's timing does not tell which entry, if any, came close. Throws while the file
   * is invalid: a broken replacement refuses every token, the previous ones too, rather than keep someone whose
   * removal it may have been meant to carry out.
   */
  authenticate(authorization: string | undefined): TokenHolder | undefined {
    const { value: tokens, error } = this.file.current();
    if (error) throw new CollectorError('COLLECTOR_BAD_CONFIG', error);
    const m = /^Bearer +(\S+) *$/i.exec(authorization ?? '');
    if (!m) return undefined;
    const given = createHash('sha256').update(m[1], 'utf8').digest();
    let found: NamedToken | undefined;
    for (const t of tokens) if (t.digest && timingSafeEqual(given, t.digest) && !found) found = t;
    return found && holderOf(found);
  }

  /**
   * The people whose `oidc` bindings include one `matches` accepts (an OIDC token's holder: auth/oidc-bearer.ts).
   * Throws while the file is invalid, as authenticate() does.
   */
  boundTo(matches: (binding: OidcSubject) => boolean): TokenHolder[] {
    const { value: tokens, error } = this.file.current();
    if (error) throw new CollectorError('COLLECTOR_BAD_CONFIG', error);
    return tokens.filter((t) => t.oidc?.some(matches)).map(holderOf);
  }
}

/** A copy without the digest: callers may change it. */
function holderOf(found: NamedToken): TokenHolder {
  return {
    name: found.name,
    groups: [...found.groups],
    ...(found.namespaces ? { namespaces: [...found.namespaces] } : {}),
    ...(found.oidc ? { oidc: found.oidc.map((b) => ({ ...b })) } : {}),
    ...(found.serviceAccounts ? { serviceAccounts: [...found.serviceAccounts] } : {}),
  };
}
