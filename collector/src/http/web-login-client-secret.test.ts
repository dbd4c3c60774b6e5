import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approversWithOidc, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import type { Collector } from '../collector.js';
import { type ApprovalsFixture, startApprovalsFixture } from '../testing/approvals-fixture.js';

const ALICE = 'tok-alice-web-login-secret-0123456789';
const PUBLIC_URL = 'https://pgwarden.example';
/** Every character that form-urlencoding (RFC 6749 §2.3.1) must carry through Basic: `:` `+` `%` space, non-ASCII. */
const SECRET = 'S3cr:t+pa ss%2B/é~!';
const WRONG = 'S3cr:t+pa ss%2B/é~?';
/** Each secret as it travels: plain, form-urlencoded, and inside the Basic credentials. */
const FORMS = [SECRET, WRONG].flatMap((s) => [
  s,
  encodeURIComponent(s),
  Buffer.from(`${encodeURIComponent('pgwarden:web')}:${encodeURIComponent(s)}`).toString('base64'),
]);

/**
 * The web sign-in as a confidential client: the identity provider requires client_secret_basic, the client id and
 * secret form-urlencoded before base64, and refuses any other. The secret is in no answer and no log line.
 */
describe('web UI sign-in as a confidential client (client_secret_basic)', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let right: Collector;
  let wrong: Collector;
  let toIdp: ReturnType<typeof createHttpsFetch>;
  let dir: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    idp = await startTestIdp();
    toIdp = createHttpsFetch({ ca: idp.ca });
    const approvers = approversWithOidc(idp.issuer, ALICE);
    fx = await startApprovalsFixture(approvers, ALICE);
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-client-secret-'));
    // A trailing newline, as `kubectl create secret --from-file` often leaves: not part of the secret.
    writeFileSync(join(dir, 'right'), `${SECRET}\n`);
    writeFileSync(join(dir, 'wrong'), WRONG);
    const start = (file: string) =>
      fx.start({
        publicUrl: PUBLIC_URL,
        logger: pino({ level: 'trace' }, { write: (line: string) => void logLines.push(line) }),
        oidc: {
          issuer: idp.issuer,
          audience: [],
          caFile: idp.caFile,
          webLogin: { clientId: 'pgwarden:web', clientSecretFile: join(dir, file) },
        },
      });
    right = await start('right');
    wrong = await start('wrong');
    idp.login = { claims: { sub: 'u-dora' }, clientSecret: SECRET };
  });
  afterAll(async () => {
    await right?.stop();
    await wrong?.stop();
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cookieOf = (r: Response) => (r.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
  /** The whole sign-in against collector `c`: the callback's answer and its body. */
  async function signIn(c: Collector): Promise<{ res: Response; text: string }> {
    const login = await fetch(`${c.url}/auth/login`, { redirect: 'manual' });
    expect(login.status).toBe(302);
    const location = login.headers.get('location') ?? '';
    const back = new URL((await toIdp(location)).headers.get('location') ?? '');
    const res = await fetch(`${c.url}/auth/callback${back.search}`, {
      redirect: 'manual',
      headers: { cookie: cookieOf(login) },
    });
    const text = await res.text();
    for (const s of FORMS) {
      expect(location).not.toContain(s);
      expect(text).not.toContain(s);
    }
    return { res, text };
  }
  const noSecretLogged = () => {
    const logs = logLines.join('\n');
    expect(logLines.length).toBeGreaterThan(0);
    for (const s of [...FORMS, 'S3cr'])
      expect(logs.includes(s) || logs.includes(JSON.stringify(s).slice(1, -1)), s).toBe(false);
  };

  it('signs in with the right secret: the provider decoded the id and secret from Basic', async () => {
    const { res } = await signIn(right);
    expect(res.status).toBe(302);
    const me = await fetch(`${right.url}/auth/me`, { headers: { cookie: cookieOf(res) } });
    expect(await me.json()).toEqual({ name: 'dora' });
    noSecretLogged();
  });

  it('a wrong secret is refused by the provider: 401 login_refused naming its error, no session, no secret anywhere', async () => {
    const { res, text } = await signIn(wrong);
    expect(res.status).toBe(401);
    expect(res.headers.get('set-cookie')).toBeNull();
    expect(JSON.parse(text)).toEqual({
      error: {
        code: 'login_refused',
        message: 'the token endpoint answered 401 (invalid_client) without an ID token',
      },
    });
    noSecretLogged();
  });
});
