import type { OidcBearer } from '../auth/oidc-bearer.js';
import { HttpError } from './json-io.js';

/** The web sign-in as an OAuth client of the issuer: its id, and its secret for a confidential client. */
export interface OAuthClient {
  clientId: string;
  clientSecret?: string;
}

/** What the token endpoint answered. Nothing here is ever logged or sent on: the tokens are secrets. */
export type TokenAnswer =
  | { kind: 'tokens'; idToken?: string; refreshToken?: string }
  /** It refused (RFC 6749 §5.2), `error` cut to 64 characters: the grant is no good (revoked, expired, unknown). */
  | { kind: 'refused'; status: number; error?: string }
  /** No answer (no `status`), or one that says nothing about the grant (5xx, not JSON): try again later. */
  | { kind: 'unreachable'; message: string; status?: number };

export interface Endpoints {
  authorization: string;
  token: string;
}

/**
 * The issuer's authorization and token endpoints (from discovery, cached once found), and the token endpoint's two
 * grants the web sign-in uses: the authorization code (RFC 6749 §4.1.3, with the PKCE verifier, RFC 7636 §4.5) and
 * the refresh token (RFC 6749 §6), both with the same client authentication: the client id in the body, and for a
 * confidential client `client_secret_basic` (id and secret each form-urlencoded, then HTTP Basic, §2.3.1).
 */
export class TokenEndpoint {
  private endpoints: Promise<Endpoints> | undefined;

  constructor(
    private readonly oidc: OidcBearer,
    private readonly client: OAuthClient,
  ) {}

  exchange(code: string, verifier: string, redirectUri: string): Promise<TokenAnswer> {
    return this.post({
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirectUri,
      code_verifier: verifier,
      client_id: this.client.clientId,
    });
  }

  /** No `scope`: the renewed grant keeps the scopes first granted (RFC 6749 §6). */
  refresh(refreshToken: string): Promise<TokenAnswer> {
    return this.post({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: this.client.clientId });
  }

  private async post(fields: Record<string, string>): Promise<TokenAnswer> {
    let token: string;
    try {
      ({ token } = await this.discover());
    } catch (err) {
      return { kind: 'unreachable', message: (err as Error).message };
    }
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (this.client.clientSecret !== undefined) {
      const enc = (s: string) => encodeURIComponent(s);
      headers.authorization = `Basic ${Buffer.from(`${enc(this.client.clientId)}:${enc(this.client.clientSecret)}`).toString('base64')}`;
    }
    let res: Response;
    try {
      res = await this.oidc.fetch(token, {
        method: 'POST',
        headers,
        body: new URLSearchParams(fields).toString(),
      });
    } catch (err) {
      return { kind: 'unreachable', message: `the token endpoint cannot be reached: ${(err as Error).message}` };
    }
    const body = (await res.json().catch(() => undefined)) as
      | { id_token?: unknown; refresh_token?: unknown; error?: unknown }
      | undefined;
    if (res.status >= 500 || !body || typeof body !== 'object')
      return { kind: 'unreachable', message: `the token endpoint answered ${res.status}`, status: res.status };
    if (res.status !== 200)
      return {
        kind: 'refused',
        status: res.status,
        ...(typeof body.error === 'string' ? { error: body.error.slice(0, 64) } : {}),
      };
    return {
      kind: 'tokens',
      ...(typeof body.id_token === 'string' ? { idToken: body.id_token } : {}),
      ...(typeof body.refresh_token === 'string' && body.refresh_token ? { refreshToken: body.refresh_token } : {}),
    };
  }

  discover(): Promise<Endpoints> {
    this.endpoints ??= (async () => {
      const url = `${this.oidc.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
      const res = await this.oidc.fetch(url);
      const doc = (await res.json()) as Record<string, unknown>;
      if (res.status !== 200 || doc.issuer !== this.oidc.issuer)
        throw new Error('no discovery document for the issuer');
      const https = (v: unknown) => typeof v === 'string' && v.startsWith('https://');
      if (!https(doc.authorization_endpoint) || !https(doc.token_endpoint))
        throw new Error('the discovery document names no https authorization and token endpoints');
      return { authorization: doc.authorization_endpoint as string, token: doc.token_endpoint as string };
    })().catch((err: unknown) => {
      this.endpoints = undefined;
      throw new HttpError(503, 'idp_unavailable', `cannot sign in: ${(err as Error).message}`);
    });
    return this.endpoints;
  }
}
