import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import {
  approvalSubject,
  auditSigner,
  parseApprovalDecision,
  parseApprovalRevoked,
  parseControlMessage,
  suspensionSubject,
  terminateSubject,
} from '@pgwarden/policy';
import pino from 'pino';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { type Collector, startCollector } from '../collector.js';
import type { FindingRow } from '../store/queries.js';
import { approvalClosed, approvalRequest } from '../testing/approval-messages.js';
import { type ApprovalsFixture, approversYaml, startApprovalsFixture } from '../testing/approvals-fixture.js';
import { makeControlApplied, makeGapDeclaration, makeHeads, makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';

const CHROMIUM = '/usr/bin/chromium';

let shared: Promise<Browser> | undefined;
afterAll(async () => {
  await (await shared)?.close();
});

/**
 * A page at `url` in a context of its own (its own cookies, storage and cache, as a fresh browser profile), collecting
 * the page's uncaught errors. One headless chromium serves the whole file: launching one per test cost 2–3 s each.
 */
async function openPage(url: string) {
  shared ??= chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic'].concat([
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ]),
  });
  const context = await (await shared).newContext();
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  return { page, errors, close: () => context.close() };
}

/** Enters `token` in the page's token form, as a person would. */
async function enterToken(page: Page, token: string) {
  await page.fill('#token', token);
  await page.click('#token-form button');
}

/** Enters a token nobody holds and waits until the approval queue says it was refused. */
async function enterUnknownToken(page: Page) {
  await enterToken(page, 'not-a-token');
  await page.waitForFunction(() => document.getElementById('approval-msg')?.textContent !== '');
}

// scripts/system-deps.sh installs chromium (Debian package); without it there is no browser to drive.
// Under CI nothing may be skipped silently: a missing build or browser fails these tests instead.
describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)('web UI in a real browser', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({ store: { url: db.url }, http: { port: 0 }, logger: pino({ level: 'silent' }) });
    // Statement text is attacker-influenced: markup in it must show as text, never become DOM.
    const evil = makeSession({
      id: 'ui-evil',
      statements: 1,
      tables: ['public."<img src=x onerror=window.__pwned=1>"'],
      startMicros: Date.UTC(2026, 10, 30, 9) * 1000,
    });
    for (const e of [
      ...makeSession({
        id: 'ui-sess',
        statements: 4,
        denyEvery: 2,
        changed: 3,
        user: 'alice',
        startMicros: Date.UTC(2026, 10, 30, 10) * 1000,
      }),
      ...evil,
    ]) {
      expect(await collector.ingest(e)).toBe('stored');
    }
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
  });

  it('lists sessions and shows a session’s statements in order, with denials marked', async () => {
    const { page, errors, close } = await openPage(collector.url);
    try {
      await page.waitForSelector('tr.s[data-session="ui-sess"]');
      const ids = await page.$$eval('tr.s', (rows) => rows.map((r) => (r as HTMLElement).dataset.session));
      expect(ids).toEqual(['ui-sess', 'ui-evil']);
      const cells = await page.$$eval('tr.s[data-session="ui-sess"] td', (tds) => tds.map((td) => td.textContent));
      expect(cells.slice(1)).toEqual(['alice', 'analytics-agent', '4', '2', 'ok', 'unsigned', 'ended']);
      await page.click('tr.s[data-session="ui-sess"]');
      await page.waitForSelector('#statements');
      const rows = await page.$$eval('#statements tr', (trs) =>
        trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      );
      expect(rows.map((r) => r[0])).toEqual(['1', '2', '3', '4', '5', '6']);
      expect(rows[2]).toEqual([
        '3',
        expect.stringMatching(/^2026-11-30T10:00:00\.002/),
        'statement',
        'deny',
        'DELETE FROM public.orders',
        'ERROR 42501',
      ]);
      // What a guarded statement changed in all (result.changed), next to its tag.
      expect(rows[1][5]).toBe('SELECT 1 (3 rows changed in all)');
      expect(await page.$$eval('#statements td.deny', (tds) => tds.length)).toBe(2);
      await page.click('tr.s[data-session="ui-evil"]');
      await page.waitForFunction(() => document.querySelector('#detail h1')?.textContent === 'Session ui-evil');
      expect(await page.textContent('#statements tr:nth-child(3) code')).toBe(
        'SELECT * FROM public."<img src=x onerror=window.__pwned=1>" WHERE id = 0',
      );
      expect(await page.$$eval('#detail img', (imgs) => imgs.length)).toBe(0);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('filters sessions through the API’s parameters and pages with More', async () => {
    // 100 older sessions in another namespace: the first page (100) ends with a cursor.
    for (let i = 0; i < 100; i++)
      for (const e of makeSession({
        id: `filler-${String(i).padStart(3, '0')}`,
        statements: 1,
        namespace: 'filler',
        startMicros: Date.UTC(2026, 10, 29, 0, i) * 1000,
      }))
        expect(await collector.ingest(e)).toBe('stored');
    const { page, errors, close } = await openPage(collector.url);
    try {
      await page.waitForSelector('tr.s[data-session="ui-sess"]');
      const count = () => page.$$eval('tr.s', (rows) => rows.length);
      expect(await count()).toBe(100);
      expect(await page.isVisible('#more')).toBe(true);
      await page.click('#more');
      await page.waitForFunction(() => document.querySelectorAll('tr.s').length === 102);
      expect(await page.isVisible('#more')).toBe(false);
      const idsNow = () => page.$$eval('tr.s', (rows) => rows.map((r) => (r as HTMLElement).dataset.session));
      await page.selectOption('#filter select[name=decision]', 'deny');
      await page.click('#filter button');
      await page.waitForFunction(() => document.querySelectorAll('tr.s').length === 1);
      expect(await idsNow()).toEqual(['ui-sess']);
      await page.selectOption('#filter select[name=decision]', '');
      await page.fill('#filter input[name=namespace]', 'agents');
      await page.click('#filter button');
      await page.waitForFunction(() => document.querySelectorAll('tr.s').length === 2);
      expect(await idsNow()).toEqual(['ui-sess', 'ui-evil']);
      await page.fill('#filter input[name=identity]', 'nobody-at-all');
      await page.click('#filter button');
      await page.waitForFunction(() => document.getElementById('sessions-msg')?.textContent === 'no sessions match');
      expect(await count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);
});

describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)('signed checkpoints in a real browser', () => {
  let dir: string;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const signer = auditSigner(String(privateKey.export({ type: 'pkcs8', format: 'pem' })));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-ui-keys-'));
    const keysFile = join(dir, 'audit-keys.json');
    const key = { name: 'agents-2026', publicKey: String(publicKey.export({ type: 'spki', format: 'pem' })) };
    writeFileSync(keysFile, JSON.stringify({ keys: [key] }));
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      signatures: { keysFile },
    });
    const at = (hour: number) => Date.UTC(2026, 10, 30, hour) * 1000;
    for (const e of [
      ...makeSession({ id: 'ui-signed', statements: 2, signer, startMicros: at(12) }),
      ...makeSession({ id: 'ui-partial', statements: 3, signer, checkpointEvery: 2, end: false, startMicros: at(11) }),
      ...makeSession({ id: 'ui-unsigned', statements: 1, startMicros: at(10) }),
    ])
      expect(await collector.ingest(e)).toBe('stored');
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows each session’s signature state next to its chain status, and who signed in its detail', async () => {
    const { page, errors, close } = await openPage(collector.url);
    try {
      await page.waitForSelector('tr.s[data-session="ui-unsigned"]');
      const rows = await page.$$eval('tr.s', (trs) =>
        trs.map((tr) => [
          (tr as HTMLElement).dataset.session,
          ...[...tr.querySelectorAll('td')].slice(5, 7).map((td) => td.textContent),
        ]),
      );
      expect(rows).toEqual([
        ['ui-signed', 'ok', 'signed'],
        ['ui-partial', 'ok', 'partial (1 unsigned)'],
        ['ui-unsigned', 'ok', 'unsigned'],
      ]);
      await page.click('tr.s[data-session="ui-signed"]');
      await page.waitForSelector('#signature');
      expect(await page.textContent('#signature')).toBe('signature: signed through seq 4 by agents-2026');
      await page.click('tr.s[data-session="ui-partial"]');
      await page.waitForFunction(() => document.querySelector('#detail h1')?.textContent === 'Session ui-partial');
      expect(await page.textContent('#signature')).toBe(
        'signature: partial: 1 event(s) after seq 3 (signed by agents-2026)',
      );
      // The checkpoints are events of the session like the others.
      expect(await page.$$eval('#statements td:nth-child(3)', (tds) => tds.map((td) => td.textContent))).toEqual([
        'session.start',
        'statement',
        'statement',
        'audit.checkpoint',
        'statement',
      ]);
      await page.selectOption('#filter select[name=signature]', 'partial');
      await page.click('#filter button');
      await page.waitForFunction(() => document.querySelectorAll('tr.s').length === 1);
      expect(await page.getAttribute('tr.s', 'data-session')).toBe('ui-partial');
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);
});

describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)('approval queue in a real browser', () => {
  const TOKEN = 'alice-token-7d1e9c';
  let fx: ApprovalsFixture;
  let collector: Collector;

  beforeAll(async () => {
    fx = await startApprovalsFixture(approversYaml({ alice: { token: TOKEN, groups: ['dba'] } }), TOKEN);
    collector = fx.collector;
  });
  afterAll(async () => {
    await fx?.stop();
  });

  it('shows a held statement to an approver, as text, and sends their approval with a reason to the sidecar', async () => {
    const nc = fx.nc;
    // The statement is the agent's text: markup in it must show as text.
    const req = approvalRequest({ sql: 'DELETE FROM "<img src=x onerror=window.__pwned=1>" WHERE id = 1' });
    const decisions = nc.subscribe(approvalSubject('decision', req.id), { max: 1 });
    await jetstream(nc).publish(approvalSubject('request', req.id), JSON.stringify(req));
    const { page, errors, close } = await openPage(collector.url);
    try {
      await enterUnknownToken(page);
      expect(await page.textContent('#approval-msg')).toMatch(/token/i);
      await enterToken(page, TOKEN);
      const row = `#approval-list tr[data-approval="${req.id}"]`;
      await page.waitForSelector(row);
      expect(await page.$$eval(`${row} td`, (tds) => tds.slice(1, 4).map((td) => td.textContent))).toEqual([
        'ana',
        'writer-review / writes-need-approval',
        req.sql,
      ]);
      expect(await page.$$eval('#approvals img', (imgs) => imgs.length)).toBe(0);
      await page.fill(`${row} input.reason`, 'checked the ticket');
      // The periodic refresh of an unchanged queue keeps what the approver is typing.
      await page.evaluate(() => (window as unknown as { loadApprovals(): Promise<void> }).loadApprovals());
      expect(await page.inputValue(`${row} input.reason`)).toBe('checked the ticket');
      await page.click(`${row} button.approve`);
      let decision: ReturnType<typeof parseApprovalDecision>;
      for await (const m of decisions) decision = parseApprovalDecision(m.data);
      expect(decision!).toMatchObject({
        id: req.id,
        decision: 'approved',
        by: { name: 'alice' },
        reason: 'checked the ticket',
      });
      await page.waitForFunction(
        (id) => document.getElementById('approval-msg')?.textContent === `approved: ${id}`,
        req.id,
      );
      await page.waitForFunction((sel) => !document.querySelector(sel), row);
      // The token stays in this tab's sessionStorage, not in the page or the URL.
      expect(await page.inputValue('#token')).toBe('');
      expect(page.url()).not.toContain(TOKEN);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('shows an approver what a held statement holds: controls, bidi overrides and padding as marks, in stored order', async () => {
    // What the agent can send through the sidecar (each one reproduced through a real sidecar and approved: the
    // first displayed as `status <> 'new' AND id = 44` and deleted every order).
    const bidi = approvalRequest({
      sql: "DELETE FROM orders WHERE status <> 'new\u202E \u2066AND id = 44\u2069 \u2066'",
    });
    const padded = approvalRequest({ sql: `DELETE FROM orders WHERE id = 44${'\n'.repeat(5000)}OR true` });
    const lookalike = approvalRequest({
      sql: 'UPDATE users SET role = $1 WHERE name = $2',
      params: ['admin', '\u0430lice\u200b'],
    });
    // A table and a requester that pass for others: Cyrillic р and о.
    const spoofed = approvalRequest({
      sql: 'DELETE FROM public.\u0440ayments WHERE id = 1',
      identity: { ...approvalRequest().identity, user: 'b\u043eb' },
    });
    // A table of Coptic letters, which only Unicode's full confusables table (embedded in the page) reads as ASCII.
    const coptic = approvalRequest({ sql: 'DELETE FROM \u2ca2\u2c9e\u2c9e\u2ca6' });
    for (const r of [bidi, padded, lookalike, spoofed, coptic])
      await jetstream(fx.nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    const { page, errors, close } = await openPage(collector.url);
    try {
      await enterToken(page, TOKEN);
      const code = (r: { id: string }) => `#approval-list tr[data-approval="${r.id}"] code`;
      for (const r of [bidi, padded, lookalike]) await page.waitForSelector(code(r));
      expect(await page.textContent(code(bidi))).toBe(
        "DELETE FROM orders WHERE status <> 'newU+202E U+2066AND id = 44U+2069 U+2066'",
      );
      expect(await page.$$eval(`${code(bidi)} span.mark`, (s) => s.map((e) => e.textContent))).toEqual([
        'U+202E',
        'U+2066',
        'U+2069',
        'U+2066',
      ]);
      // Characters display in the order they are stored, whatever their direction.
      expect(await page.$eval(code(bidi), (e) => getComputedStyle(e).unicodeBidi)).toBe('bidi-override');
      expect(await page.textContent(code(padded))).toBe('DELETE FROM orders WHERE id = 445000 line breaks\nOR true');
      const height = await page.$eval(
        `#approval-list tr[data-approval="${padded.id}"]`,
        (e) => e.getBoundingClientRect().height,
      );
      expect(height).toBeLessThan(300);
      const cell = `#approval-list tr[data-approval="${lookalike.id}"] td:nth-child(4)`;
      expect(await page.textContent(`${cell} div:not(.nonascii):not(.lookalike)`)).toBe(
        'with $1 = "admin", $2 = "аliceU+200B"',
      );
      expect(await page.textContent(`${cell} div.nonascii`)).toBe('not ASCII: U+0430 а, U+200B');
      expect(await page.textContent(`${cell} div.lookalike`)).toBe(
        '⚠ look-alike letters: "аlice" mixes Cyrillic and Latin (U+0430 а), reads as "alice"',
      );
      const spoofedCell = `#approval-list tr[data-approval="${spoofed.id}"] td:nth-child(4)`;
      await page.waitForSelector(`${spoofedCell} div.lookalike`);
      expect(await page.textContent(`${spoofedCell} div.lookalike`)).toBe(
        '⚠ look-alike letters: "рayments" mixes Cyrillic and Latin (U+0440 р), reads as "payments"; ' +
          '"bоb" mixes Cyrillic and Latin (U+043E о), reads as "bob"',
      );
      const copticCell = `#approval-list tr[data-approval="${coptic.id}"] td:nth-child(4)`;
      await page.waitForSelector(`${copticCell} div.lookalike`);
      expect(await page.textContent(`${copticCell} div.lookalike`)).toBe(
        '⚠ look-alike letters: "ⲢⲞⲞⲦ" is Coptic (U+2CA2 Ⲣ, U+2C9E Ⲟ, U+2CA6 Ⲧ), reads as "POOT"',
      );
      // Plain statements carry no such warning.
      expect(await page.$$(`#approval-list tr[data-approval="${bidi.id}"] div.lookalike`)).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('marks each bound value of a held statement text or binary: a text `\\x41` is not shown as bytes', async () => {
    const typed = approvalRequest({
      sql: 'UPDATE files SET body = $1, name = $2, note = $3 WHERE id = $4',
      params: ['\\x41', '\\x41', null, '7'],
      paramFormats: ['binary', 'text', 'text', 'text'],
    });
    // From a sidecar that does not say (or a note in place of the values): quoted and unmarked, as before.
    const unsaid = approvalRequest({ sql: 'DELETE FROM t WHERE id = $1', params: ['\\x41'] });
    for (const r of [typed, unsaid])
      await jetstream(fx.nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    const { page, errors, close } = await openPage(collector.url);
    try {
      await enterToken(page, TOKEN);
      const values = (r: { id: string }) => `#approval-list tr[data-approval="${r.id}"] td:nth-child(4) div`;
      await page.waitForSelector(values(typed));
      expect(await page.textContent(values(typed))).toBe(
        'with $1 (binary) = \\x41, $2 (text) = "\\\\x41", $3 = NULL, $4 (text) = "7"',
      );
      await page.waitForSelector(values(unsaid));
      expect(await page.textContent(values(unsaid))).toBe('with $1 = "\\\\x41"');
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('runs no script but its own, even from markup that got into the page, and cannot be framed', async () => {
    const { page, errors, close } = await openPage(collector.url);
    try {
      await page.evaluate(() => {
        const d = document.createElement('div');
        d.innerHTML = '<img src="data:," onerror="window.__pwned=1"><svg onload="window.__pwned=2"></svg>';
        document.body.append(d);
      });
      await page.waitForTimeout(300);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      // Another site's page framing the UI (clickjacking Approve): the browser refuses to render it.
      const framer = await page.context().newPage();
      await framer.setContent(`<iframe id="f" src="${collector.url}/"></iframe>`);
      await framer.waitForTimeout(1000);
      const frame = framer.frames().find((f) => f !== framer.mainFrame());
      expect(await frame?.evaluate(() => document.getElementById('approvals') !== null).catch(() => false)).toBe(false);
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('offers a grant where the request allows one, lists the active grant, and revokes it', async () => {
    const nc = fx.nc;
    const req = approvalRequest({ grantMax: '1h', fingerprint: '0123456789abcdef', sql: 'DELETE FROM t WHERE id = 1' });
    const plain = approvalRequest({ sql: 'DELETE FROM t WHERE id = 2' });
    const decisions = nc.subscribe(approvalSubject('decision', req.id), { max: 1 });
    await jetstream(nc).publish(approvalSubject('request', req.id), JSON.stringify(req));
    await jetstream(nc).publish(approvalSubject('request', plain.id), JSON.stringify(plain));
    // Opened from a notification's link, the page marks the request it names.
    const { page, errors, close } = await openPage(`${collector.url}/?approval=${req.id}#approvals`);
    try {
      await enterToken(page, TOKEN);
      const row = `#approval-list tr[data-approval="${req.id}"]`;
      await page.waitForSelector(row);
      await page.waitForSelector(`#approval-list tr[data-approval="${plain.id}"]`);
      expect(await page.$eval(row, (tr) => tr.className)).toBe('linked');
      expect(await page.$eval(`#approval-list tr[data-approval="${plain.id}"]`, (tr) => tr.className)).toBe('');
      // Only the request that offers a grant gets the choice, up to its grantMax.
      expect(await page.$$eval(`#approval-list tr[data-approval="${plain.id}"] select.grant`, (s) => s.length)).toBe(0);
      expect(
        await page.$$eval(`${row} select.grant option`, (os) => os.map((o) => (o as HTMLOptionElement).value)),
      ).toEqual(['', '5m', '15m', '1h']);
      await page.selectOption(`${row} select.grant`, '15m');
      await page.click(`${row} button.approve`);
      let decision: ReturnType<typeof parseApprovalDecision>;
      for await (const m of decisions) decision = parseApprovalDecision(m.data);
      expect(decision!).toMatchObject({ id: req.id, decision: 'approved', grant: { for: '15m' } });
      await page.waitForFunction(
        (id) => document.getElementById('approval-msg')?.textContent === `approved: ${id}, with a grant for 15m`,
        req.id,
      );
      // The sidecar reports the grant it took; the panel lists it, and Revoke publishes the revocation.
      const until = new Date(Date.now() + 900_000).toISOString();
      const closed = approvalClosed(req.id, 'approved', { name: 'alice', groups: [] }, until);
      await jetstream(nc).publish(approvalSubject('closed', req.id), JSON.stringify(closed));
      const grantRow = `#grant-list tr[data-grant="${req.id}"]`;
      await page.evaluate(() => (window as unknown as { loadGrants(): Promise<void> }).loadGrants());
      await page.waitForSelector(grantRow);
      expect(await page.$$eval(`${grantRow} td`, (tds) => tds.slice(0, 5).map((td) => td.textContent))).toEqual([
        until,
        'alice',
        'ana',
        'writer-review / writes-need-approval',
        req.sql,
      ]);
      const revocations = nc.subscribe(approvalSubject('revoked', req.id), { max: 1 });
      await nc.flush(); // the server has the subscription before the collector can publish
      await page.fill(`${grantRow} input.reason`, 'batch done');
      await page.click(`${grantRow} button.revoke`);
      let revoked: ReturnType<typeof parseApprovalRevoked>;
      for await (const m of revocations) revoked = parseApprovalRevoked(m.data);
      expect(revoked!).toMatchObject({ id: req.id, by: { name: 'alice' }, reason: 'batch done' });
      await page.waitForFunction((sel) => !document.querySelector(sel), grantRow);
      expect(await page.textContent('#grants-msg')).toBe(`revoked: ${req.id}`);
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('lists recently decided requests with who decided, their reason and the outcome, and marks a linked one', async () => {
    const nc = fx.nc;
    const js = jetstream(nc);
    const base = Date.now() + 3_600_000; // newer than the other tests' requests, so all four are on the first page
    const at = (i: number) => new Date(base + i * 1000).toISOString();
    const rejected = approvalRequest({ requestedAt: at(1), sql: 'DROP TABLE "<img src=x onerror=window.__pwned=1>"' });
    const approved = approvalRequest({ requestedAt: at(2), sql: 'DELETE FROM t WHERE id = 3' });
    const expired = approvalRequest({ requestedAt: at(3), expiresAt: new Date(Date.now() - 1000).toISOString() });
    const pending = approvalRequest({ requestedAt: at(4), sql: 'DELETE FROM t WHERE id = 4' });
    // Approved, but its sidecar's policy was reloaded during the hold: the sidecar denied it.
    const stale = approvalRequest({ requestedAt: at(0), sql: 'DELETE FROM t WHERE id = 5' });
    for (const r of [rejected, approved, expired, pending, stale])
      await js.publish(approvalSubject('request', r.id), JSON.stringify(r));
    const decide = async (id: string, body: object) => {
      const res = await fetch(`${collector.url}/api/v1/approvals/${id}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(200);
    };
    await decide(rejected.id, { decision: 'reject', reason: 'not during <b>business</b> hours' });
    await decide(approved.id, { decision: 'approve', reason: 'ticket OPS-7' });
    await decide(stale.id, { decision: 'approve', reason: 'ticket OPS-8' });
    await js.publish(
      approvalSubject('closed', stale.id),
      JSON.stringify({ ...approvalClosed(stale.id, 'denied'), reason: 'stale: policy reloaded' }),
    );
    const alice = { name: 'alice', groups: ['dba'] };
    await js.publish(
      approvalSubject('closed', rejected.id),
      JSON.stringify(approvalClosed(rejected.id, 'rejected', alice)),
    );
    // Opened from the rejection's follow-up notification: the page marks it among the decided ones.
    const { page, errors, close } = await openPage(`${collector.url}/?approval=${rejected.id}`);
    try {
      await enterToken(page, TOKEN);
      const row = (id: string) => `#decided-list tr[data-decided="${id}"]`;
      await page.waitForSelector(row(rejected.id));
      const cells = (id: string) => page.$$eval(`${row(id)} td`, (tds) => tds.map((td) => td.textContent));
      expect(await cells(rejected.id)).toEqual([
        rejected.requestedAt,
        'ana',
        'writer-review / writes-need-approval',
        rejected.sql,
        'rejected by alice: not during <b>business</b> hours',
      ]);
      expect(await page.$eval(row(rejected.id), (tr) => tr.className)).toBe('linked');
      expect((await cells(approved.id))[4]).toBe('approved by alice: ticket OPS-7, not yet applied by its sidecar');
      expect((await cells(expired.id))[4]).toBe('expired without a decision');
      expect((await cells(stale.id))[4]).toBe('denied by its sidecar after alice’s approval: stale: policy reloaded');
      expect(await page.$eval(`${row(stale.id)} td:last-child`, (td) => td.className)).toBe('deny');
      // Still pending: in the queue, not among the decided.
      expect(await page.$$eval(row(pending.id), (trs) => trs.length)).toBe(0);
      await page.waitForSelector(`#approval-list tr[data-approval="${pending.id}"]`);
      // Newest request first.
      const order = await page.$$eval('#decided-list tr', (trs) =>
        trs.map((tr) => (tr as HTMLElement).dataset.decided),
      );
      expect(order.slice(0, 3)).toEqual([expired.id, approved.id, rejected.id]);
      // The sidecar applies the approval: the next refresh shows the outcome it reported.
      await js.publish(
        approvalSubject('closed', approved.id),
        JSON.stringify(approvalClosed(approved.id, 'approved', alice)),
      );
      await expect
        .poll(
          async () => {
            await page.evaluate(() => (window as unknown as { loadDecided(): Promise<void> }).loadDecided());
            return page.textContent(`${row(approved.id)} td:last-child`);
          },
          { timeout: 10_000 },
        )
        .toBe('approved by alice: ticket OPS-7');
      expect(await page.$$eval('#decided img, #decided b', (e) => e.length)).toBe(0);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('lets an approver close a finding with a reason, and shows it closed, with who and why, as text', async () => {
    const gap = makeGapDeclaration({ instance: 'ui-torn', pod: 'orders-0', sessions: [], truncated: true });
    expect(await collector.ingest(gap)).toBe('stored');
    const row = 'tr[data-finding="sidecar-ui-torn"]';
    const { page, errors, close } = await openPage(collector.url);
    try {
      // Anyone may read this collector's trail, but only an approver gets a Close form.
      await enterUnknownToken(page);
      await page.waitForSelector(`${row} td.bad:last-child`);
      expect(await page.$(`${row} form`)).toBeNull();

      await enterToken(page, TOKEN);
      await page.waitForSelector(`${row} form`);
      await page.click(`${row} form button`);
      // The reason is required: the browser refuses to submit without one, and nothing is closed.
      expect(await page.$eval(`${row} input`, (i) => (i as HTMLInputElement).validity.valueMissing)).toBe(true);
      await page.fill(`${row} input`, 'torn record after node <b>reboot</b>; checked');
      await page.click(`${row} form button`);
      await page.waitForSelector(`${row}.closed`);
      expect(await page.$eval(`${row} td:last-child`, (td) => td.textContent)).toMatch(
        /^closed \S+Z by alice: torn record after node <b>reboot<\/b>; checked$/,
      );
      expect(await page.$$eval('#findings b', (b) => b.length)).toBe(0);
      const [closed] = (
        (await (await fetch(`${collector.url}/api/v1/findings?state=closed`)).json()) as { items: FindingRow[] }
      ).items;
      expect(closed).toMatchObject({ sessionId: 'sidecar-ui-torn', closed: { by: 'alice' } });
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('lets an approver terminate an open session, and shows the sidecar’s control.applied as text', async () => {
    const session = randomUUID();
    for (const e of makeSession({ id: session, statements: 1, end: false, startMicros: Date.UTC(2026, 11, 2) * 1000 }))
      expect(await collector.ingest(e)).toBe('stored');
    const [applied] = makeControlApplied('ui-sc', [
      {
        kind: 'terminate',
        id: randomUUID(),
        by: 'alice',
        reason: 'stuck <b>agent</b>',
        at: new Date().toISOString(),
        session,
        signed: true,
        sessionsEnded: 1,
      },
    ]);
    expect(await collector.ingest(applied)).toBe('stored');
    const published = fx.nc.subscribe(terminateSubject(session), { max: 1 });
    await fx.nc.flush();
    const { page, errors, close } = await openPage(collector.url);
    try {
      // Anyone may read this collector's trail (loopback, no readers file), but only an approver gets the button.
      await enterUnknownToken(page);
      await page.click(`tr.s[data-session="${session}"]`);
      await page.waitForSelector('#statements');
      expect(await page.$('#terminate')).toBeNull();

      await enterToken(page, TOKEN);
      await page.waitForSelector('#approval-list tr');
      await page.click(`tr.s[data-session="${session}"]`);
      await page.fill('#terminate input', 'runaway loop');
      await page.click('#terminate button');
      let m: ReturnType<typeof parseControlMessage>;
      for await (const msg of published) m = parseControlMessage(msg.data);
      expect(m!).toMatchObject({ kind: 'terminate', session, by: 'alice', reason: 'runaway loop' });
      await page.waitForFunction(() =>
        /^terminate published/.test(document.querySelector('#terminate .ok')?.textContent ?? ''),
      );
      expect(await page.textContent('#terminate .ok')).toContain(m!.id);
      // The session's sidecar reports applying it: the page says so.
      const report = { kind: 'terminate' as const, id: m!.id, by: 'alice', reason: 'runaway loop', at: m!.at, session };
      for (const e of makeControlApplied('ui-sc2', [{ ...report, signed: false, sessionsEnded: 1 }], Date.now()))
        expect(await collector.ingest(e)).toBe('stored');
      await page.waitForFunction(() =>
        /^session ended by its sidecar \(ui-sc2, control /.test(
          document.querySelector('#terminate .ok')?.textContent ?? '',
        ),
      );

      await page.click('tr.s[data-session="sidecar-ui-sc"]');
      await page.waitForFunction(() => document.querySelector('#detail h1')?.textContent === 'Session sidecar-ui-sc');
      expect(
        await page.$$eval('#statements tr:nth-child(2) td', (tds) => tds.slice(2, 5).map((td) => td.textContent)),
      ).toEqual([
        'control.applied',
        '',
        `terminate session ${session} by alice: stuck <b>agent</b> (1 session(s) ended, signed)`,
      ]);
      expect(await page.$$eval('#detail b', (b) => b.length)).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);

  it('lets an approver suspend a policy and resume it, with what its sidecars reported, and errors as text', async () => {
    const policy = { namespace: 'agents', name: 'analytics-agent' };
    const published = fx.nc.subscribe(suspensionSubject(policy), { max: 1 });
    await fx.nc.flush();
    const { page, errors, close } = await openPage(collector.url);
    try {
      await enterUnknownToken(page);
      expect(await page.isVisible('#suspensions')).toBe(false);

      await enterToken(page, TOKEN);
      await page.waitForSelector('#suspensions');
      // The panel shows before its list has loaded: wait for the answer, not only for the panel.
      await page.waitForFunction(() => document.getElementById('suspension-list')?.textContent !== '');
      expect(await page.textContent('#suspension-list')).toBe('no policy is suspended');
      await page.fill('#suspend input[name=policy]', 'agents/analytics-agent');
      await page.fill('#suspend input[name=reason]', 'leaks <b>x</b>, OPS-12');
      await page.click('#suspend button');
      let m: ReturnType<typeof parseControlMessage>;
      for await (const msg of published) m = parseControlMessage(msg.data);
      expect(m!).toMatchObject({ kind: 'suspend', policy, by: 'alice', reason: 'leaks <b>x</b>, OPS-12' });
      const row = '#suspension-list tr[data-policy="agents/analytics-agent"]';
      await page.waitForSelector(row);
      expect(await page.$$eval(`${row} td`, (tds) => tds.slice(0, 5).map((td) => td.textContent))).toEqual([
        'agents/analytics-agent',
        m!.at,
        'alice',
        'leaks <b>x</b>, OPS-12',
        'no',
      ]);
      expect(await page.$$eval('#suspensions b', (b) => b.length)).toBe(0);
      expect(await page.textContent('#suspension-action')).toBe(
        `suspend agents/analytics-agent published (control ${m!.id}): every sidecar serving it refuses new logins and ends its sessions`,
      );
      // A sidecar serving the policy reports applying it: the page counts the sidecars and the sessions they ended.
      const report = { kind: 'suspend' as const, id: m!.id, by: 'alice', reason: m!.reason, at: m!.at, policy };
      for (const e of makeControlApplied('ui-sc3', [{ ...report, signed: false, sessionsEnded: 2 }], Date.now()))
        expect(await collector.ingest(e)).toBe('stored');
      await page.waitForFunction(
        (text) => document.getElementById('suspension-action')?.textContent === text,
        `suspend agents/analytics-agent published (control ${m!.id}): applied by 1 sidecar(s), ended 2 session(s)`,
      );

      await page.fill(`${row} input[name=reason]`, 'fixed in OPS-12');
      await page.click(`${row} button`);
      await page.waitForFunction(
        () => document.getElementById('suspension-list')?.textContent === 'no policy is suspended',
      );
      expect(await page.textContent('#suspension-action')).toMatch(
        /^resume agents\/analytics-agent published \(control [0-9a-f-]{36}\): its sidecars accept logins again$/,
      );

      await page.fill('#suspend input[name=policy]', 'agents/Not_A_Name');
      await page.click('#suspend button');
      await page.waitForFunction(() => document.querySelector('#suspension-action.msg') !== null);
      expect(await page.textContent('#suspension-action')).toBe(
        '"agents/Not_A_Name" is no policy: namespace and name are Kubernetes names (namespace _ for a policy without one)',
      );
      // A token that is no approver's (any more) hides the panel again.
      await enterToken(page, 'not-a-token');
      await page.waitForSelector('#suspensions', { state: 'hidden' });
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 30_000);
});

describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)(
  'a collector that needs a reader token, in a real browser',
  () => {
    const TOKEN = 'rita-reader-3e8a41';
    let dir: string;
    let db: Awaited<ReturnType<typeof createTestDatabase>>;
    let collector: Collector;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'pgwarden-ui-readers-'));
      const readersFile = join(dir, 'readers.yaml');
      writeFileSync(readersFile, approversYaml({ rita: { token: TOKEN } }));
      db = await createTestDatabase(inject('pg'), ROLES.superuser);
      collector = await startCollector({
        store: { url: db.url },
        http: { port: 0 },
        logger: pino({ level: 'silent' }),
        read: { readersFile },
      });
      for (const e of makeSession({ id: 'tok-sess-1', statements: 1 }))
        expect(await collector.ingest(e)).toBe('stored');
    });
    afterAll(async () => {
      await collector?.stop();
      await db?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('shows nothing until a reader’s token is given, then the sessions, and new ones live', async () => {
      const { page, errors, close } = await openPage(collector.url);
      try {
        await page.waitForFunction(() => document.getElementById('sessions-msg')?.textContent !== '');
        expect(await page.textContent('#sessions-msg')).toBe(
          'reading the audit trail needs a reader or approver token',
        );
        expect(await page.$$eval('tr.s', (rows) => rows.length)).toBe(0);
        await enterToken(page, TOKEN);
        await page.waitForSelector('tr.s[data-session="tok-sess-1"]');
        expect(await page.textContent('#sessions-msg')).toBe('');
        // The live stream (read with fetch, carrying the token) brings a session that starts later without a reload.
        const later = makeSession({ id: 'tok-sess-2', statements: 1, startMicros: Date.UTC(2026, 11, 1) * 1000 });
        await new Promise((r) => setTimeout(r, 300));
        for (const e of later) expect(await collector.ingest(e)).toBe('stored');
        await page.waitForSelector('tr.s[data-session="tok-sess-2"]', { timeout: 10_000 });
        await page.click('tr.s[data-session="tok-sess-2"]');
        await page.waitForSelector('#statements');
        expect(page.url()).not.toContain(TOKEN);
        expect(errors).toEqual([]);
      } finally {
        await close();
      }
    }, 60_000);
  },
);

describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)('chain findings in a real browser', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  // A forged heads event may name any session id: it must show as text, never become DOM.
  const EVIL = 'ui-gone-<img src=x onerror=window.__pwned=3>';

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      gapGraceMs: 0,
    });
    const cut = makeSession({ id: 'ui-cut', statements: 2, instance: 'ui-side' });
    const gone = makeSession({ id: EVIL, statements: 1, instance: 'ui-side' });
    // Its sidecar last named the cut session hours ago, and names its open chains every minute: interrupted.
    for (const e of [...cut.slice(0, 2), ...makeHeads('ui-side', [[cut, gone]], { refreshMs: 60_000 })])
      expect(await collector.ingest(e)).toBe('stored');
    const until = Date.now() + 15_000;
    for (;;) {
      const page = (await (await fetch(`${collector.url}/api/v1/findings`)).json()) as { items: unknown[] };
      if (page.items?.length === 2 || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
  });

  it('lists open findings, a chain deleted whole included, and opens the session of one that has a record', async () => {
    const { page, errors, close } = await openPage(collector.url);
    try {
      await page.waitForSelector('#finding-list tr[data-finding="ui-cut"]');
      const rows = await page.$$eval('#finding-list tr', (trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      );
      const byKind = new Map(rows.map((r) => [r[2], r]));
      expect(byKind.get('ui-cut')?.slice(1, 4)).toEqual(['audit.gap', 'ui-cut', '3..4']);
      expect(byKind.get('ui-cut')?.[4]).toMatch(/^events 3\.\.4 are missing: the sidecar's sidecar-ui-side\.1/);
      expect(byKind.get(`${EVIL} (no record)`)?.slice(3)).toEqual([
        '1..3',
        "the whole chain is missing: the sidecar's sidecar-ui-side.1 recorded it up to seq 3",
        'open',
      ]);
      expect(await page.$$eval('#findings img', (imgs) => imgs.length)).toBe(0);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      await page.click('#finding-list tr[data-finding="ui-cut"]');
      await page.waitForFunction(() => document.querySelector('#detail h1')?.textContent === 'Session ui-cut');
      expect(await page.$$eval('#detail p.bad', (ps) => ps.map((p) => p.textContent))).toContain(
        "audit.gap: events 3..4 are missing: the sidecar's sidecar-ui-side.1 recorded the chain up to seq 4",
      );
      expect(await page.textContent('#state')).toBe(
        'state: interrupted - its sidecar last named it at 2026-11-30T13:00:00.000000Z',
      );
      await page.waitForSelector('tr.s[data-session="ui-cut"]');
      expect(await page.$$eval('tr.s[data-session="ui-cut"] td', (tds) => tds.at(-1)?.textContent)).toBe('interrupted');
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 60_000);
});
