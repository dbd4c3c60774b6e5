import { readFileSync } from 'node:fs';
import {
  buildExporter,
  type CollectorOptions,
  type Exporter,
  loadExportsConfig,
  startCollector,
} from '@pgwarden/collector';
import { parseDuration } from '@pgwarden/policy';
import { type Command, InvalidArgumentError, Option } from 'commander';

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return n;
};

function parseListen(v: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i === -1 || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidArgumentError('--listen must be HOST:PORT');
  return { host: v.slice(0, i).replace(/^\[|\]$/g, '') || '127.0.0.1', port };
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** --allowed-host names, else env PGWARDEN_ALLOWED_HOSTS (comma-separated); the same for --trusted-proxy. */
function listOf(flags: string[] | undefined, env = process.env.PGWARDEN_ALLOWED_HOSTS): string[] {
  if (flags?.length) return flags;
  return env
    ? env
        .split(',')
        .map((n) => n.trim())
        .filter(Boolean)
    : [];
}

/** `pgwarden collector`: the audit store service (NATS consumer, chain checks, HTTP API, exports). */
export function registerCollector(program: Command): void {
  program
    .command('collector')
    .description('consume audit events from NATS JetStream into a store, verify hash chains, serve the API and exports')
    .option('--nats <url>', 'NATS server URL (stream PGWARDEN_AUDIT is created if missing)')
    .option(
      '--nats-credentials-dir <dir>',
      'directory with files username and password: the NATS user to consume as (re-read at each connect)',
    )
    .option('--durable <name>', 'durable consumer name', 'pgwarden-collector')
    .option(
      '--ack-wait <seconds>',
      'redelivery delay for messages delivered but not acknowledged (e.g. after a crash)',
      int('--ack-wait'),
      60,
    )
    .option(
      '--store <url>',
      'PostgreSQL URL for the store (or env PGWARDEN_COLLECTOR_STORE, which keeps the password out of ps)',
    )
    .option('--data-dir <dir>', 'embedded store (PGlite) data directory when no --store is given; in memory if omitted')
    .option('--listen <host:port>', 'HTTP API address', '127.0.0.1:8080')
    .option(
      '--allowed-host <name>',
      'a host name the API is reached by (Host header; repeatable, or env PGWARDEN_ALLOWED_HOSTS, comma-separated): ' +
        'other names get 421, so a DNS-rebinding web page cannot read the API. Addresses, localhost, the --listen ' +
        'name and the --public-url name are always accepted; * accepts any name',
      collect,
    )
    .option(
      '--trusted-proxy <address>',
      'an address or CIDR range of a proxy in front of the API (an ingress) whose X-Forwarded-For names the client, ' +
        'so that the web sign-in is rate-limited per person rather than per proxy (repeatable, or env ' +
        'PGWARDEN_TRUSTED_PROXIES, comma-separated). Without it X-Forwarded-For is ignored',
      collect,
    )
    .option('--tls-cert <file>', 'serve the API over HTTPS with this certificate (PEM; re-read when it changes)')
    .option('--tls-key <file>', 'the certificate’s private key (PEM)')
    .option('--http-ingest', 'accept events on POST /api/v1/ingest (default on when there is no --nats)')
    .option('--ingest-token-file <file>', 'bearer token required by POST /api/v1/ingest')
    .option(
      '--insecure-open-ingest',
      'accept POST /api/v1/ingest without a token on a non-loopback --listen (anyone who reaches it can add events)',
    )
    .option(
      '--tail-file <path>',
      'follow a JSON-lines audit file written by a sidecar (--audit file:PATH); repeatable',
      collect,
    )
    .option('--retention-days <n>', 'drop day partitions older than this many days', int('--retention-days'))
    .option(
      '--gap-grace <seconds>',
      'how long a hole in a chain may stay open before it is an audit.gap',
      int('--gap-grace'),
      30,
    )
    .option(
      '--exports <file>',
      'exports config (YAML/JSON): jsonl, splunk-hec, elasticsearch, syslog; see docs/collector.md',
    )
    .option(
      '--approvers-file <file>',
      'who may read and decide held statements, and terminate sessions or suspend policies (YAML/JSON list of ' +
        '{name, groups, tokenSha256, oidc?, serviceAccounts?}; re-read when it changes); or env PGWARDEN_APPROVERS_FILE. Without it the ' +
        'approvals and control APIs answer 501',
    )
    .option(
      '--approvals-signing-key <file>',
      'Ed25519 private key (PEM; `pgwarden approvals keygen`) every decision and control message is signed with, ' +
        'for policies that list its public key in approval.decisionKeys; or env PGWARDEN_APPROVALS_SIGNING_KEY_FILE',
    )
    .option(
      '--approval-webhook-url-file <file>',
      'announce each statement held for approval to a webhook (Slack or JSON), once across replicas: a file holding ' +
        'its URL, read at start (the URL is a secret: never an argument); or env PGWARDEN_APPROVAL_WEBHOOK_URL_FILE, ' +
        'or PGWARDEN_APPROVAL_WEBHOOK_URL holding the URL itself. Needs --nats',
    )
    .addOption(
      new Option('--approval-webhook-format <format>', 'json (pgwarden’s own body) or slack ({"text": …})')
        .choices(['json', 'slack'])
        .default('json'),
    )
    .option(
      '--approval-webhook-secret-file <file>',
      'sign each notice: X-Pgwarden-Signature: sha256=<hex HMAC-SHA256 of "<X-Pgwarden-Timestamp>.<body>"> keyed ' +
        'with this file’s secret; or env PGWARDEN_APPROVAL_WEBHOOK_SECRET_FILE',
    )
    .option(
      '--approval-webhook-sql',
      'include the statement in notices (secret-redacted, cut to 500 characters); off by default: SQL may hold ' +
        'personal data, and a chat is not the audit store',
    )
    .option(
      '--no-approval-webhook-outcomes',
      'announce held statements only: by default each announced one is followed up when its hold ends ' +
        '(approved by whom, rejected, expired, cancelled by the client), never with its SQL',
    )
    .option(
      '--public-url <url>',
      'the web UI’s address as people reach it (e.g. an ingress): notices link to it; or env PGWARDEN_PUBLIC_URL',
    )
    .option(
      '--readers-file <file>',
      'who may read the audit trail over HTTP (sessions, events, stream, verify): same format as --approvers-file, ' +
        'approvers may read too; or env PGWARDEN_READERS_FILE. Without it those routes are open, which is allowed ' +
        'only on a loopback --listen',
    )
    .option('--insecure-open-api', 'serve the audit trail without a token on a non-loopback --listen')
    .option(
      '--oidc-issuer <url>',
      'also accept this identity provider’s OIDC tokens (JWTs) as bearer tokens, verified against its keys (https ' +
        'discovery): a token acts as the approvers or readers entry whose oidc binding names its holder; or env ' +
        'PGWARDEN_OIDC_ISSUER',
    )
    .option(
      '--oidc-audience <aud>',
      'an audience the tokens must carry in aud (repeatable; required with --oidc-issuer); or env ' +
        'PGWARDEN_OIDC_AUDIENCE, comma-separated',
      collect,
    )
    .option(
      '--oidc-ca-file <file>',
      'CA certificates (PEM) for the identity provider’s TLS, besides the system roots; or env PGWARDEN_OIDC_CA_FILE',
    )
    .option(
      '--oidc-username-claim <claim>',
      'the claim matched against the subject of oidc bindings (default sub, as the sidecar records users); or env ' +
        'PGWARDEN_OIDC_USERNAME_CLAIM',
    )
    .option(
      '--oidc-client-id <id>',
      'let people sign in to the web UI through the identity provider (authorization code + PKCE) as this OAuth ' +
        'client, redirected back to <--public-url>/auth/callback; its id counts as an audience; or env ' +
        'PGWARDEN_OIDC_CLIENT_ID',
    )
    .option(
      '--oidc-client-secret-file <file>',
      'the client secret, for a confidential client (without it the client is public, PKCE only); or env ' +
        'PGWARDEN_OIDC_CLIENT_SECRET_FILE',
    )
    .option(
      '--sign-in-burst <n>',
      'sign-ins one client (IPv4 address or IPv6 /64) may start at once through the web UI before it gets 429, ' +
        'counted in the store across replicas (default 20; needs --oidc-client-id); or env PGWARDEN_SIGN_IN_BURST',
    )
    .option(
      '--sign-in-per-minute <n>',
      'sign-ins a client may start per minute past its burst, across replicas (default 10, may be a fraction: 0.5 is ' +
        'one every 2 minutes); or env PGWARDEN_SIGN_IN_PER_MINUTE',
    )
    .option(
      '--oidc-offline-access',
      'ask for the offline_access scope (with prompt=consent) at web sign-in, for identity providers that issue ' +
        'refresh tokens only then; or env PGWARDEN_OIDC_OFFLINE_ACCESS=true',
    )
    .option(
      '--web-session-key-file <file>',
      'keep web sign-ins past their ID token with the identity provider’s refresh token, sealed (AES-256-GCM) with ' +
        'the 32 bytes in this file, the same on every replica (openssl rand -out FILE 32); without it a sign-in ends ' +
        'with its ID token; or env PGWARDEN_WEB_SESSION_KEY_FILE',
    )
    .option(
      '--web-session-previous-key-file <file>',
      'a web session key that only opens refresh tokens sealed before a key rotation (they are sealed again with ' +
        '--web-session-key-file at their next renewal); repeatable; or env PGWARDEN_WEB_SESSION_PREVIOUS_KEY_FILE ' +
        '(comma-separated)',
      collect,
    )
    .option(
      '--web-session-max-age <duration>',
      'no web sign-in lasts longer than this, renewed or not (default 12h; like 8h, 90m); or env ' +
        'PGWARDEN_WEB_SESSION_MAX_AGE',
    )
    .option(
      '--web-session-idle-timeout <duration>',
      'a web sign-in unused this long ends (default 1h; an open page keeps it in use); or env ' +
        'PGWARDEN_WEB_SESSION_IDLE_TIMEOUT',
    )
    .option(
      '--oidc-groups-claim <claim>',
      'add the token’s groups from this claim to those its approvers/readers entry gives (default: the token’s ' +
        'groups are ignored; they never stand in for an entry); or env PGWARDEN_OIDC_GROUPS_CLAIM',
    )
    .option(
      '--audit-keys <file>',
      'public keys of the sidecars’ audit signing keys (YAML/JSON {keys: [{name, publicKey, namespaces?}]}, ' +
        '`pgwarden audit keygen`; re-read when it changes): audit.checkpoint events are verified against them; or ' +
        'env PGWARDEN_AUDIT_KEYS_FILE. Without it checkpoints are stored but reported unverified',
    )
    .option(
      '--require-signed-audit',
      'verification fails for an ended session that is not fully signed and for any session of a namespace a key ' +
        'covers that has no valid checkpoint (needs --audit-keys)',
    )
    .option(
      '--audit-signing-key <file>',
      'Ed25519 private key (PEM PKCS#8, `pgwarden audit keygen`) that signs the collector’s own chain of audit.read ' +
        'events with audit.checkpoint events (list its public key in --audit-keys); or env ' +
        'PGWARDEN_AUDIT_SIGNING_KEY_FILE',
    )
    .option(
      '--insecure-unrecorded-reads',
      'serve a read of the trail even when its audit.read event cannot be stored (logged and counted); by default ' +
        'such a read is refused with 503',
    )
    .action(async (o) => {
      const storeUrl: string | undefined = o.store ?? process.env.PGWARDEN_COLLECTOR_STORE;
      let exporters: Exporter[] = [];
      let startAt: 'beginning' | 'now' | undefined;
      if (o.exports) {
        const cfg = loadExportsConfig(o.exports);
        exporters = cfg.exports.map(buildExporter);
        startAt = cfg.startAt;
      }
      const token = o.ingestTokenFile ? readFileSync(o.ingestTokenFile, 'utf8').trim() : undefined;
      let collector: Awaited<ReturnType<typeof startCollector>>;
      try {
        collector = await startCollector({
          nats: o.nats
            ? { url: o.nats, durable: o.durable, ackWaitMs: o.ackWait * 1000, credentialsDir: o.natsCredentialsDir }
            : undefined,
          store: { url: storeUrl, dataDir: o.dataDir },
          http: {
            ...parseListen(o.listen),
            ...tlsOf(o),
            allowedHosts: listOf(o.allowedHost),
            trustedProxies: listOf(o.trustedProxy, process.env.PGWARDEN_TRUSTED_PROXIES),
          },
          httpIngest: {
            enabled: Boolean(o.httpIngest) || token !== undefined || !o.nats,
            token,
            insecureOpen: Boolean(o.insecureOpenIngest),
          },
          tailFiles: o.tailFile,
          retentionDays: o.retentionDays,
          gapGraceMs: o.gapGrace * 1000,
          exporters,
          exportStartAt: startAt,
          approvals: {
            approversFile: o.approversFile ?? process.env.PGWARDEN_APPROVERS_FILE,
            signingKeyFile: o.approvalsSigningKey ?? process.env.PGWARDEN_APPROVALS_SIGNING_KEY_FILE,
          },
          approvalNotifications: approvalNotificationsOf(o),
          publicUrl: o.publicUrl ?? process.env.PGWARDEN_PUBLIC_URL,
          read: {
            readersFile: o.readersFile ?? process.env.PGWARDEN_READERS_FILE,
            insecureOpen: Boolean(o.insecureOpenApi),
          },
          oidc: oidcOf(o),
          signatures: {
            keysFile: o.auditKeys ?? process.env.PGWARDEN_AUDIT_KEYS_FILE,
            requireSigned: Boolean(o.requireSignedAudit),
          },
          // Every read of the trail is itself audited, in the collector's own chain (docs/collector.md).
          readAudit: {
            signingKeyFile: o.auditSigningKey ?? process.env.PGWARDEN_AUDIT_SIGNING_KEY_FILE,
            failOpen: Boolean(o.insecureUnrecordedReads),
          },
        });
      } catch (err) {
        // A configuration the collector refuses (bad files, an open API on the network, no store) is one line, not a
        // stack trace.
        process.stderr.write(`pgwarden collector: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      }
      process.stdout.write(`collector listening on ${collector.url}\n`);
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${signal}: draining and stopping\n`);
        await collector.stop();
        process.exit(0);
      };
      process.on('SIGTERM', () => void stop('SIGTERM'));
      process.on('SIGINT', () => void stop('SIGINT'));
    });
}

/** The webhook settings when any is given (the collector refuses a secret or --approval-webhook-sql without a URL). */
function approvalNotificationsOf(o: {
  approvalWebhookUrlFile?: string;
  approvalWebhookFormat: 'json' | 'slack';
  approvalWebhookSecretFile?: string;
  approvalWebhookSql?: boolean;
  approvalWebhookOutcomes: boolean;
}): CollectorOptions['approvalNotifications'] {
  const urlFile = o.approvalWebhookUrlFile ?? process.env.PGWARDEN_APPROVAL_WEBHOOK_URL_FILE;
  const url = urlFile ? undefined : process.env.PGWARDEN_APPROVAL_WEBHOOK_URL;
  const secretFile = o.approvalWebhookSecretFile ?? process.env.PGWARDEN_APPROVAL_WEBHOOK_SECRET_FILE;
  if (!urlFile && !url && !secretFile && !o.approvalWebhookSql) return undefined;
  return {
    webhookUrlFile: urlFile,
    webhookUrl: url,
    format: o.approvalWebhookFormat,
    signingSecretFile: secretFile,
    includeSql: Boolean(o.approvalWebhookSql),
    outcomes: o.approvalWebhookOutcomes,
  };
}

/** The `--oidc-*` flags (or their environment variables); undefined without an issuer. */
function oidcOf(o: {
  oidcIssuer?: string;
  oidcAudience?: string[];
  oidcCaFile?: string;
  oidcUsernameClaim?: string;
  oidcGroupsClaim?: string;
  oidcClientId?: string;
  oidcClientSecretFile?: string;
  signInBurst?: string;
  signInPerMinute?: string;
  oidcOfflineAccess?: boolean;
  webSessionKeyFile?: string;
  webSessionPreviousKeyFile?: string[];
  webSessionMaxAge?: string;
  webSessionIdleTimeout?: string;
}): CollectorOptions['oidc'] {
  const env = process.env;
  const issuer = o.oidcIssuer ?? env.PGWARDEN_OIDC_ISSUER;
  const audience = o.oidcAudience?.length
    ? o.oidcAudience
    : (env.PGWARDEN_OIDC_AUDIENCE ?? '')
        .split(',')
        .map((a) => a.trim())
        .filter(Boolean);
  const caFile = o.oidcCaFile ?? env.PGWARDEN_OIDC_CA_FILE;
  const usernameClaim = o.oidcUsernameClaim ?? env.PGWARDEN_OIDC_USERNAME_CLAIM;
  const groupsClaim = o.oidcGroupsClaim ?? env.PGWARDEN_OIDC_GROUPS_CLAIM;
  const clientId = o.oidcClientId ?? env.PGWARDEN_OIDC_CLIENT_ID;
  const clientSecretFile = o.oidcClientSecretFile ?? env.PGWARDEN_OIDC_CLIENT_SECRET_FILE;
  if (clientSecretFile && !clientId) throw new InvalidArgumentError('--oidc-client-secret-file needs --oidc-client-id');
  const rate = signInRateFlags(
    o.signInBurst ?? env.PGWARDEN_SIGN_IN_BURST,
    o.signInPerMinute ?? env.PGWARDEN_SIGN_IN_PER_MINUTE,
  );
  if (rate && !clientId)
    throw new InvalidArgumentError(
      '--sign-in-burst and --sign-in-per-minute limit the web sign-in: they need --oidc-client-id',
    );
  const sessions = webSessionFlags(o);
  if (Object.keys(sessions).length && !clientId)
    throw new InvalidArgumentError(
      '--oidc-offline-access and the --web-session-* flags shape the web sign-in: they need --oidc-client-id',
    );
  if (!issuer) {
    if (audience.length || caFile || usernameClaim || groupsClaim || clientId)
      throw new InvalidArgumentError('the --oidc-* flags need --oidc-issuer');
    return undefined;
  }
  if (audience.length === 0 && !clientId)
    throw new InvalidArgumentError('--oidc-issuer needs --oidc-audience (or --oidc-client-id)');
  return {
    issuer,
    audience,
    ...(caFile ? { caFile } : {}),
    ...(usernameClaim ? { usernameClaim } : {}),
    ...(groupsClaim ? { groupsClaim } : {}),
    ...(clientId
      ? {
          webLogin: {
            clientId,
            ...(clientSecretFile ? { clientSecretFile } : {}),
            ...(rate ? { rate } : {}),
            ...sessions,
          },
        }
      : {}),
  };
}

/** `--oidc-offline-access` and `--web-session-*` (or their environment variables), as far as they are set. */
function webSessionFlags(o: {
  oidcOfflineAccess?: boolean;
  webSessionKeyFile?: string;
  webSessionPreviousKeyFile?: string[];
  webSessionMaxAge?: string;
  webSessionIdleTimeout?: string;
}) {
  const env = process.env;
  const seconds = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const ms = parseDuration(v.trim());
    if (ms === undefined || ms < 1000 || ms > 30 * 86_400_000)
      throw new InvalidArgumentError(
        `${flag} must be a duration from 1s to 720h, like 12h or 90m, not ${JSON.stringify(v)}`,
      );
    return Math.floor(ms / 1000);
  };
  const offline = o.oidcOfflineAccess || env.PGWARDEN_OIDC_OFFLINE_ACCESS === 'true';
  const keyFile = o.webSessionKeyFile ?? env.PGWARDEN_WEB_SESSION_KEY_FILE;
  const previous = o.webSessionPreviousKeyFile?.length
    ? o.webSessionPreviousKeyFile
    : (env.PGWARDEN_WEB_SESSION_PREVIOUS_KEY_FILE ?? '')
        .split(',')
        .map((f) => f.trim())
        .filter(Boolean);
  if (previous.length && !keyFile)
    throw new InvalidArgumentError(
      '--web-session-previous-key-file only opens what --web-session-key-file sealed: it needs --web-session-key-file',
    );
  const maxAge = seconds('--web-session-max-age', o.webSessionMaxAge ?? env.PGWARDEN_WEB_SESSION_MAX_AGE);
  const idle = seconds('--web-session-idle-timeout', o.webSessionIdleTimeout ?? env.PGWARDEN_WEB_SESSION_IDLE_TIMEOUT);
  return {
    ...(offline ? { offlineAccess: true } : {}),
    ...(keyFile ? { sessionKeyFile: keyFile } : {}),
    ...(previous.length ? { sessionPreviousKeyFiles: previous } : {}),
    ...(maxAge !== undefined ? { sessionMaxAgeS: maxAge } : {}),
    ...(idle !== undefined ? { sessionIdleS: idle } : {}),
  };
}

/** What is set of the sign-in limit; the collector fills in the defaults and checks the bounds. */
function signInRateFlags(burst: string | undefined, perMinute: string | undefined) {
  if (burst === undefined && perMinute === undefined) return undefined;
  // Number('') is 0 and Number(' 5 ') is 5: only a plain decimal is read as one.
  const num = (flag: string, v: string) => {
    if (!/^\d+(\.\d+)?$/.test(v)) throw new InvalidArgumentError(`${flag} must be a number, not ${JSON.stringify(v)}`);
    return Number(v);
  };
  return {
    ...(burst !== undefined ? { burst: num('--sign-in-burst', burst) } : {}),
    ...(perMinute !== undefined ? { perMinute: num('--sign-in-per-minute', perMinute) } : {}),
  };
}

function tlsOf(o: { tlsCert?: string; tlsKey?: string }): { tls?: { certFile: string; keyFile: string } } {
  if (!o.tlsCert && !o.tlsKey) return {};
  if (!o.tlsCert || !o.tlsKey) throw new InvalidArgumentError('--tls-cert and --tls-key go together');
  return { tls: { certFile: o.tlsCert, keyFile: o.tlsKey } };
}
