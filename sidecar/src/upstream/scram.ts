import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { UpstreamError } from './errors.js';

/**
 * SCRAM-SHA-256 and SCRAM-SHA-256-PLUS client (RFC 5802, RFC 7677) as PostgreSQL speaks it: PostgreSQL ignores the
 * SCRAM user name (it uses the startup packet's), so the client-first message carries `n=` and libpq does the same.
 * https://www.postgresql.org/docs/current/sasl-authentication.html
 */

/**
 * The GS2 header's channel-binding flag (RFC 5802 §7): `n` no TLS or binding disabled; `y` the client could bind but
 * the server did not offer -PLUS (a server that did offer it then knows the offer was stripped and refuses);
 * `p` bound to the server certificate (`data`, channel-binding.ts).
 */
export type ScramBinding = { flag: 'n' } | { flag: 'y' } | { flag: 'p'; data: Buffer };

/** SASLprep (RFC 4013) as far as PostgreSQL needs it: ASCII passwords are used as is, others NFKC-normalised. */
export function saslPrep(password: string): string {
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  return password
    .replace(/[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g, ' ')
    .replace(/\u00ad|\u200c|\u200d|\u2060|\ufeff/g, '')
    .normalize('NFKC');
}

const hmac = (key: Buffer, data: string | Buffer) => createHmac('sha256', key).update(data).digest();

let saltedCache: { key: string; value: Buffer } | null = null;

/** PBKDF2 is deliberately slow (4096 rounds by default); PostgreSQL's salt is fixed per role, so one entry caches it. */
async function saltedPassword(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  const key = createHash('sha256')
    .update(password)
    .update('\0')
    .update(salt)
    .update(String(iterations))
    .digest('base64');
  if (saltedCache?.key === key) return saltedCache.value;
  const value = await new Promise<Buffer>((resolve, reject) =>
    pbkdf2(saslPrep(password), salt, iterations, 32, 'sha256', (err, k) => (err ? reject(err) : resolve(k))),
  );
  saltedCache = { key, value };
  return value;
}

export class ScramClient {
  private readonly nonce: string;
  private readonly clientFirstBare: string;
  private readonly gs2Header: string;
  private readonly binding: ScramBinding;
  private serverSignature: Buffer | null = null;
  /** True once the server's signature checked out: only then has the server proved it knows the password. */
  verified = false;

  constructor(nonce = randomBytes(18).toString('base64'), binding: ScramBinding = { flag: 'n' }) {
    this.nonce = nonce;
    this.clientFirstBare = `n=,r=${nonce}`;
    this.binding = binding;
    this.gs2Header = binding.flag === 'p' ? 'p=tls-server-end-point,,' : `${binding.flag},,`;
  }

  /** The SASL mechanism this client speaks. */
  get mechanism(): 'SCRAM-SHA-256' | 'SCRAM-SHA-256-PLUS' {
    return this.binding.flag === 'p' ? 'SCRAM-SHA-256-PLUS' : 'SCRAM-SHA-256';
  }

  /** The client-first message, for SASLInitialResponse. */
  first(): Buffer {
    return Buffer.from(this.gs2Header + this.clientFirstBare, 'utf8');
  }

  /** Answers the server-first message (SASLContinue) with the client-final message (SASLResponse). */
  async final(serverFirst: string, password: string): Promise<Buffer> {
    const attrs = parseAttributes(serverFirst);
    const r = attrs.get('r');
    const s = attrs.get('s');
    const i = Number(attrs.get('i'));
    if (!r || !s || !Number.isInteger(i) || i < 1)
      throw new UpstreamError('PGW_UPSTREAM_SCRAM', 'malformed SCRAM server-first message');
    if (!r.startsWith(this.nonce) || r.length === this.nonce.length) {
      throw new UpstreamError('PGW_UPSTREAM_SCRAM', 'SCRAM server nonce does not extend the client nonce');
    }
    const salted = await saltedPassword(password, Buffer.from(s, 'base64'), i);
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    // c= is the GS2 header plus, when bound, the certificate hash: both are under the proof, so neither a stripped
    // -PLUS offer (flag y) nor a relayed exchange (another certificate's hash) goes unnoticed by the server.
    const cbind = Buffer.from(this.gs2Header, 'utf8');
    const c = this.binding.flag === 'p' ? Buffer.concat([cbind, this.binding.data]) : cbind;
    const withoutProof = `c=${c.toString('base64')},r=${r}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let k = 0; k < proof.length; k++) proof[k] = clientKey[k] ^ clientSignature[k];
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`, 'utf8');
  }

  /** Verifies the server-final message (SASLFinal): proves the server knew the password too. */
  verify(serverFinal: string): void {
    const attrs = parseAttributes(serverFinal);
    const e = attrs.get('e');
    if (e) throw new UpstreamError('PGW_UPSTREAM_SCRAM', `SCRAM authentication failed: ${e}`);
    const v = attrs.get('v');
    const expected = this.serverSignature;
    const got = v ? Buffer.from(v, 'base64') : Buffer.alloc(0);
    if (!expected || got.length !== expected.length || !timingSafeEqual(got, expected)) {
      throw new UpstreamError('PGW_UPSTREAM_SCRAM', 'SCRAM server signature is invalid');
    }
    this.verified = true;
  }
}

function parseAttributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) out.set(part[0], part.slice(2));
  }
  return out;
}

/** PostgreSQL's md5 password response: "md5" + md5(md5(password + user) + salt) in hex. */
export function md5Response(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password).update(user).digest('hex');
  return `md5${createHash('md5').update(inner).update(salt).digest('hex')}`;
}
