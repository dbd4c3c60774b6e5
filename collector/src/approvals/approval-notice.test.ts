import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { approvalRequest } from '../testing/approval-messages.js';
import { approvalLink, askedBy, noticeBody, signatureHeaders, truncateSql } from './approval-notice.js';

const NOW = Date.parse('2026-11-30T12:00:00Z');
const request = approvalRequest({
  id: '0b9a4a4e-8a55-4c4e-9a39-3f4f3b1c2d10',
  requestedAt: new Date(NOW).toISOString(),
  expiresAt: new Date(NOW + 600_000).toISOString(),
});

describe('approval notice bodies', () => {
  it('json: the documented fields, no SQL unless asked, a link with a public URL', () => {
    const body = JSON.parse(noticeBody(request, { format: 'json', includeSql: false }, NOW));
    expect(body).toEqual({
      type: 'approval.requested',
      id: request.id,
      policy: { name: 'writer-review', namespace: 'agents' },
      rule: 'writes-need-approval',
      session: 'sess-held-1',
      identity: {
        namespace: 'agents',
        serviceAccount: 'analytics',
        pod: 'analytics-0',
        user: 'ana',
        groups: ['data-team'],
      },
      requestedAt: request.requestedAt,
      expiresAt: request.expiresAt,
    });
    const full = JSON.parse(
      noticeBody(request, { format: 'json', includeSql: true, publicUrl: 'https://pgw.example.com/' }, NOW),
    );
    expect(full.sql).toBe(request.sql);
    expect(full.url).toBe(`https://pgw.example.com/?approval=${request.id}#approvals`);
  });

  it('with the SQL, a prepared statement’s values, each marked text or binary (a text `\\x41` is not bytes)', () => {
    const bound = {
      ...request,
      params: ['\\x41', '\\x41', null],
      paramFormats: ['text' as const, 'binary' as const, 'text' as const],
    };
    const json = JSON.parse(noticeBody(bound, { format: 'json', includeSql: true }, NOW));
    expect(json).toMatchObject({ params: bound.params, paramFormats: bound.paramFormats });
    const without = JSON.parse(noticeBody(bound, { format: 'json', includeSql: false }, NOW));
    expect(without).not.toHaveProperty('params');
    expect(without).not.toHaveProperty('paramFormats');
    const slack = (r: typeof request, includeSql: boolean) =>
      JSON.parse(noticeBody(r, { format: 'slack', includeSql }, NOW)).text as string;
    expect(slack(bound, true).split('\n').at(-1)).toBe('with `$1 (text) = "\\\\x41", $2 (binary) = \\x41, $3 = NULL`');
    expect(slack(bound, false)).not.toContain('x41');
    // A value cannot close the code span and format the rest.
    expect(slack({ ...bound, params: ['a` *b*'], paramFormats: ['text'] }, true)).toContain(
      'with `$1 (text) = "a`\u200b *b*"`',
    );
  });

  it('slack: one line saying what, who and until when, escaped so nothing in it can ping or link', () => {
    const text = (over = {}, opts = {}) =>
      JSON.parse(noticeBody({ ...request, ...over }, { format: 'slack', includeSql: false, ...opts }, NOW)).text;
    expect(text()).toBe(
      'Statement held for approval: policy agents/writer-review, rule writes-need-approval, asked by ana, ' +
        'expires in 10 min.',
    );
    expect(text({}, { publicUrl: 'https://pgw.example.com' })).toMatch(
      new RegExp(`expires in 10 min\\. <https://pgw\\.example\\.com/\\?approval=${request.id}#approvals\\|Review it`),
    );
    const hostile = text(
      { identity: { user: '<!channel> & <https://evil.example|click>' }, sql: 'SELECT 1 -- <!here>' },
      { includeSql: true },
    );
    expect(hostile).not.toMatch(/<!channel>|<!here>|<https:\/\/evil/);
    expect(hostile).toContain('asked by &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;');
    expect(hostile).toContain('\n```SELECT 1 -- &lt;!here&gt;```');
    // A ``` in the SQL cannot close the code block (the rest would be formatted, bare URLs linked).
    const fence = text({ sql: 'SELECT 1 ``` *urgent* https://evil.example ```' }, { includeSql: true });
    expect(fence.split('\n')[1]).toBe(
      '```SELECT 1 `\u200b`\u200b`\u200b *urgent* https://evil.example `\u200b`\u200b`\u200b```',
    );
    expect(text({ rule: '', policy: { name: 'p', hash: 'h' } })).toContain('policy p, the policy’s default action,');
    expect(text({ expiresAt: new Date(NOW + 20_000).toISOString() })).toContain('expires in less than a minute');
  });

  it('slack: the statement as the web UI shows it, bidi overrides and controls as marks; json keeps it as stored', () => {
    const sql = "DELETE FROM orders WHERE status <> 'new\u202E \u2066AND id = 44\u2069 \u2066' /*\x1b[8m*/";
    const slack = JSON.parse(noticeBody({ ...request, sql }, { format: 'slack', includeSql: true }, NOW)).text;
    expect(slack).not.toMatch(/[\u202e\u2066\u2069\x1b]/);
    expect(slack.split('\n')[1]).toBe(
      "```DELETE FROM orders WHERE status &lt;&gt; 'new⟨U+202E⟩ ⟨U+2066⟩AND id = 44⟨U+2069⟩ ⟨U+2066⟩' /*⟨U+001B⟩[8m*/```",
    );
    const json = JSON.parse(noticeBody({ ...request, sql }, { format: 'json', includeSql: true }, NOW));
    expect(json.sql).toBe(sql);
  });

  it('slack: flags words that pass for others, in the statement only when the statement is shown', () => {
    const spoofed = {
      ...request,
      sql: 'DELETE FROM public.\u0440ayments',
      identity: { ...request.identity, user: 'b\u043eb' },
    };
    const withSql = JSON.parse(noticeBody(spoofed, { format: 'slack', includeSql: true }, NOW)).text.split('\n');
    expect(withSql[1]).toBe(
      ':warning: Look-alike letters: "bоb" mixes Cyrillic and Latin (U+043E о), reads as "bob"; ' +
        '"рayments" mixes Cyrillic and Latin (U+0440 р), reads as "payments"',
    );
    expect(withSql[2]).toBe('```DELETE FROM public.рayments```');
    const withoutSql = JSON.parse(noticeBody(spoofed, { format: 'slack', includeSql: false }, NOW)).text;
    expect(withoutSql).toContain('"bоb" mixes Cyrillic and Latin');
    expect(withoutSql).not.toContain('ayments');
    expect(JSON.parse(noticeBody(request, { format: 'slack', includeSql: true }, NOW)).text).not.toContain(
      'Look-alike',
    );
  });

  it('names who asked: the OIDC user, else service account and pod', () => {
    expect(askedBy({ user: 'ana', serviceAccount: 'sa', pod: 'p-0' })).toBe('ana');
    expect(askedBy({ namespace: 'agents', serviceAccount: 'sa', pod: 'p-0' })).toBe('agents/sa/p-0');
    expect(askedBy({ pod: 'p-0' })).toBe('p-0');
    expect(askedBy({})).toBe('an unknown identity');
  });

  it('keeps only the identity’s known fields, bounded', () => {
    const body = JSON.parse(
      noticeBody(
        { ...request, identity: { user: 'u'.repeat(1000), token: 'eyJ-secret', groups: ['g', 7, ''] } },
        { format: 'json', includeSql: false },
        NOW,
      ),
    );
    expect(body.identity).toEqual({ user: 'u'.repeat(256), groups: ['g'] });
  });

  it('cuts SQL to 500 characters, never inside a surrogate pair', () => {
    expect(truncateSql('x'.repeat(500))).toBe('x'.repeat(500));
    const cut = truncateSql('y'.repeat(800));
    expect(cut).toBe(`${'y'.repeat(499)}…`);
    expect(Array.from(cut)).toHaveLength(500);
    const emoji = truncateSql('😀'.repeat(600));
    expect(Array.from(emoji)).toHaveLength(500);
    expect(emoji.endsWith('😀…')).toBe(true);
    expect(approvalLink('https://h/base//', 'a b')).toBe('https://h/base/?approval=a%20b#approvals');
  });

  it('signs "<timestamp>.<body>" with HMAC-SHA256, as a receiver checks it', () => {
    const body = noticeBody(request, { format: 'json', includeSql: false }, NOW);
    const h = signatureHeaders('shh-secret', body, 1_796_040_000);
    expect(h['x-pgwarden-timestamp']).toBe('1796040000');
    const expected = createHmac('sha256', 'shh-secret').update(`1796040000.${body}`).digest('hex');
    expect(h['x-pgwarden-signature']).toBe(`sha256=${expected}`);
    expect(signatureHeaders('other', body, 1_796_040_000)['x-pgwarden-signature']).not.toBe(h['x-pgwarden-signature']);
    expect(signatureHeaders('shh-secret', `${body} `, 1_796_040_000)['x-pgwarden-signature']).not.toBe(
      h['x-pgwarden-signature'],
    );
  });

  it('says when the request offers a grant, and for how long at most', () => {
    const offered = { ...request, grantMax: '1h' };
    expect(JSON.parse(noticeBody(offered, { format: 'json', includeSql: false }, NOW)).grantMax).toBe('1h');
    expect(JSON.parse(noticeBody(request, { format: 'json', includeSql: false }, NOW)).grantMax).toBeUndefined();
    expect(JSON.parse(noticeBody(offered, { format: 'slack', includeSql: false }, NOW)).text).toBe(
      'Statement held for approval: policy agents/writer-review, rule writes-need-approval, asked by ana, ' +
        'expires in 10 min. It may be approved with its shape for up to 1h.',
    );
  });
});
