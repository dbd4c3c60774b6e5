import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCollector } from '../collector.js';
import { resolveApprovalNotifications } from './approval-notifier-config.js';

const TOKEN = 'xoxb-T0KEN-9f8e7d';

describe('approval notification settings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-notify-config-'));
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the URL and the signing secret from files (a Secret mount’s trailing newline dropped)', () => {
    const r = resolveApprovalNotifications(
      {
        webhookUrlFile: file('url', `https://hooks.slack.com/services/${TOKEN}\n`),
        signingSecretFile: file('secret', 's3cret\n'),
        format: 'slack',
      },
      'https://pgwarden.example.com/ui/',
    );
    expect(r.notifier.webhook).toMatchObject({
      format: 'slack',
      includeSql: false,
      signingSecret: 's3cret',
      publicUrl: 'https://pgwarden.example.com/ui',
    });
    expect(r.notifier.webhook.url.pathname).toBe(`/services/${TOKEN}`);
    expect(r.origin).toBe('https://hooks.slack.com');
    expect(r.plainHttpOffLoopback).toBe(false);
    // Follow-ups come with notifications unless turned off.
    expect(r.notifier.outcomes).toBe(true);
    expect(resolveApprovalNotifications({ webhookUrl: 'https://h/x', outcomes: false }).notifier.outcomes).toBe(false);
  });

  it('flags plain http beyond this machine, not on loopback', () => {
    const plain = (url: string) => resolveApprovalNotifications({ webhookUrl: url }).plainHttpOffLoopback;
    expect(plain('http://hooks.internal:8080/x')).toBe(true);
    expect(plain('http://127.0.0.1:9000/x')).toBe(false);
    expect(plain('http://[::1]:9000/x')).toBe(false);
    expect(plain('http://localhost/x')).toBe(false);
  });

  it('refuses what cannot work, naming the file but never the URL or the secret', () => {
    const refusal = (o: Parameters<typeof resolveApprovalNotifications>[0], publicUrl?: string) => {
      try {
        resolveApprovalNotifications(o, publicUrl);
      } catch (err) {
        return (err as Error & { code: string }).code + ': ' + (err as Error).message;
      }
      throw new Error('accepted');
    };
    const missing = join(dir, 'nope');
    expect(refusal({ webhookUrlFile: missing })).toBe(
      `COLLECTOR_BAD_CONFIG: approval webhook URL ${missing} cannot be read: ENOENT`,
    );
    expect(refusal({ webhookUrlFile: file('empty', '\n') })).toMatch(/is empty$/);
    const ftp = file('ftp', `ftp://user:${TOKEN}@files.example.com/${TOKEN}`);
    expect(refusal({ webhookUrlFile: ftp })).toBe(
      `COLLECTOR_BAD_CONFIG: the approval webhook URL in file ${ftp} must be https (or http), not ftp:`,
    );
    const junk = file('junk', `hooks.slack.com/services/${TOKEN}`);
    expect(refusal({ webhookUrlFile: junk })).toBe(
      `COLLECTOR_BAD_CONFIG: the approval webhook URL in file ${junk} is not a URL`,
    );
    expect(refusal({ webhookUrl: `not a url ${TOKEN}` })).not.toContain(TOKEN);
    expect(refusal({})).toMatch(/need a webhook URL/);
    expect(refusal({ webhookUrl: 'https://h/x', format: 'teams' as 'json' })).toMatch(/format must be json or slack/);
    expect(refusal({ webhookUrl: 'https://h/x' }, 'pgwarden.example.com')).toMatch(/--public-url .* is not a URL/);
  });

  it('refuses notifications without NATS before opening anything', async () => {
    await expect(
      startCollector({ http: { port: 0 }, approvalNotifications: { webhookUrl: 'https://hooks.example.com/x' } }),
    ).rejects.toThrow(/approval notifications need --nats/);
  });
});
