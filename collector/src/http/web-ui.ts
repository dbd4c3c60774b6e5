import { createHash } from 'node:crypto';
import { confusablePrototypes, lookAlikeSkeleton, lookAlikes } from '../display/look-alikes.js';
import { nonAsciiCharacters, visiblePieces, visibleText } from '../display/visible-text.js';

/**
 * The collector's single-page UI: the approval queue (for approvers: statements held by `review` rules, to approve
 * or reject, with a grant where the policy allows one), the active grants (to revoke), the recently decided requests
 * (what became of each), the suspended policies (for approvers: suspend and resume), the open chain findings and those closed by hand (for approvers: close one, with a reason), a session list (newest first, chain status, signed-checkpoint state) and a session's statements in
 * order (and, for approvers, Terminate on an open one). Plain HTML + JS over
 * the public JSON API; no build step, no third-party code. All values are inserted as text nodes, never as HTML,
 * because statements and identities are attacker-influenced text; and every text goes through visiblePieces
 * (display/visible-text.ts, embedded here from its source) so that controls, bidi overrides, invisible characters and
 * padding show as marks, and cells display characters in the order they are stored (bidi-override), not reordered. One token (a reader's, or an approver's, which also
 * reads) lives in sessionStorage (this tab only) and is sent only as a bearer header to this origin; the live stream
 * is read with fetch, not EventSource, because EventSource cannot send that header.
 */
export const WEB_UI_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pgwarden collector</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;height:100vh}
#list{width:42%;overflow:auto;border-right:1px solid #ccc}#detail{flex:1;overflow:auto;padding:0 1em}
table{border-collapse:collapse;width:100%}td,th{padding:4px 6px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td,th,p,h1,code,.msg{unicode-bidi:bidi-override;direction:ltr}.mark{font:11px monospace;background:#fde2e2;color:#900;border:1px solid #e99;border-radius:3px;padding:0 2px;margin:0 1px}.nonascii{color:#b00;font-size:12px}.lookalike{color:#fff;background:#b00;font-weight:bold;font-size:12px;padding:1px 4px;border-radius:3px}
tr.s,tr.f{cursor:pointer}.closed{color:#555}tr.s:hover,tr.f:hover{background:#f4f4ff}.ok{color:#070}.bad{color:#b00;font-weight:bold}.deny{color:#b00}
code{white-space:pre-wrap;word-break:break-all}h1{font-size:16px;margin:8px}
#approvals,#grants,#decided,#suspensions,#findings{padding:0 8px 8px;border-bottom:1px solid #ccc}#approvals input[type=password]{width:16em}
#approval-list td:last-child,#grant-list td:last-child,#suspension-list td:last-child{white-space:nowrap}tr.linked{background:#fff6d5}.msg{color:#b00}
</style></head><body>
<div id="list">
<section id="approvals"><h1>Pending approvals</h1>
<form id="token-form"><input id="token" type="password" autocomplete="off" placeholder="reader or approver token"> <button>Load</button> <a id="sso-in" href="/auth/login" hidden>Sign in with SSO</a><span id="sso-user" hidden></span> <button id="sso-out" type="button" hidden>Sign out</button> <span id="approval-msg" class="msg"></span></form>
<table><thead><tr><th>requested</th><th>who</th><th>policy / rule</th><th>statement</th><th></th></tr></thead><tbody id="approval-list"></tbody></table>
</section>
<section id="grants" hidden><h1>Active grants <span id="grants-msg" class="msg"></span></h1>
<table><thead><tr><th>ends</th><th>approved by</th><th>who</th><th>policy / rule</th><th>approved statement</th><th></th></tr></thead><tbody id="grant-list"></tbody></table></section>
<section id="decided" hidden><h1>Recently decided <span id="decided-msg" class="msg"></span></h1>
<table><thead><tr><th>requested</th><th>who</th><th>policy / rule</th><th>statement</th><th>outcome</th></tr></thead><tbody id="decided-list"></tbody></table></section>
<section id="suspensions" hidden><h1>Suspended policies <span id="suspensions-msg" class="msg"></span></h1>
<div id="suspension-action"></div>
<table><thead><tr><th>policy</th><th>since</th><th>by</th><th>reason</th><th>signed</th><th></th></tr></thead><tbody id="suspension-list"></tbody></table></section>
<section id="findings"><h1>Chain findings <span id="findings-msg" class="msg"></span></h1>
<table><thead><tr><th>detected</th><th>kind</th><th>session</th><th>seq</th><th>detail</th><th>state</th></tr></thead><tbody id="finding-list"></tbody></table></section>
<h1>Sessions <span id="sessions-msg" class="msg"></span></h1>
<form id="filter"><input name="identity" placeholder="identity"> <input name="namespace" placeholder="namespace"> <input name="policy" placeholder="policy">
<select name="decision"><option value="">any decision</option><option>deny</option><option>review</option><option>dryrun</option><option>allow</option></select>
<select name="chain"><option value="">any chain</option><option>ok</option><option>pending</option><option>gap</option><option>tampered</option></select>
<select name="signature"><option value="">any signature</option><option>signed</option><option>partial</option><option>unsigned</option><option>unverified</option></select>
<select name="state"><option value="">any state</option><option>open</option><option>ended</option><option>interrupted</option></select> <button>Filter</button></form><table><thead><tr><th>started</th><th>identity</th><th>policy</th><th>stmts</th><th>denied</th><th>chain</th><th>signature</th><th>state</th></tr></thead><tbody id="sessions"></tbody></table><button id="more" type="button" hidden>More</button></div>
<div id="detail"><p>Select a session.</p></div>
<script>
${visiblePieces.toString()}
${visibleText.toString()}
${nonAsciiCharacters.toString()}
// Unicode's confusables (UTS #39) as lookAlikeSkeleton reads them: base-36 digits and ,:.+= only, nothing HTML reads.
const confusablePrototypes = ${JSON.stringify(confusablePrototypes)};
${lookAlikeSkeleton.toString()}
${lookAlikes.toString()}
// Text only, never markup; what would display differently from what is stored becomes a marked span.
function setText(e, text) {
  e.replaceChildren(...visiblePieces(String(text)).map((p) => typeof p === 'string' ? p : Object.assign(document.createElement('span'), { className: 'mark', textContent: p.mark })));
}
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) setText(e, text); if (cls) e.className = cls; return e; };
const token = () => sessionStorage.getItem('pgwarden-token') || '';
const auth = () => (token() ? { authorization: 'Bearer ' + token() } : {});
const sessionsMsg = (text) => { setText(document.getElementById('sessions-msg'), text); };
// Signed checkpoints (docs/collector.md): short in the list, with the key and seq in a session's detail.
const signatureShort = (s) => s.signature === 'partial' ? 'partial (' + s.unsignedEvents + ' unsigned)' : s.signature;
function signatureLong(s) {
  if (s.signature === 'signed') return 'signed through seq ' + s.signedSeq + ' by ' + s.signedBy;
  if (s.signature === 'partial') return 'partial: ' + s.unsignedEvents + ' event(s) after seq ' + s.signedSeq + ' (signed by ' + s.signedBy + ')';
  if (s.signature === 'unverified') return 'unverified: checkpoints not checked, no audit keys';
  return String(s.signature);
}
async function getJson(path) {
  const r = await fetch(path, { headers: auth() });
  if (r.status === 401) {
    const body = await r.json().catch(() => ({}));
    if (body.error && body.error.code === 'session_ended') { ssoEnded(); throw new Error(body.error.message); }
    throw new Error('reading the audit trail needs a reader or approver token');
  }
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return r.json();
}
// The filter form's non-empty fields become the API's query parameters; "More" follows the page's cursor.
function sessionsQuery(cursor) {
  const q = new URLSearchParams({ limit: '100' });
  for (const [k, v] of new FormData(document.getElementById('filter'))) if (String(v).trim()) q.set(k, String(v).trim());
  if (cursor) q.set('cursor', cursor);
  return '/api/v1/sessions?' + q;
}
let nextCursor = null;
async function loadSessions(more) {
  let page;
  try { page = await getJson(sessionsQuery(more ? nextCursor : null)); } catch (e) { sessionsMsg(String(e.message)); return; }
  sessionsMsg(more || page.items.length ? '' : 'no sessions match');
  nextCursor = page.next;
  document.getElementById('more').hidden = !page.next;
  const body = document.getElementById('sessions'); if (!more) body.replaceChildren();
  for (const s of page.items) {
    const tr = el('tr', undefined, 's'); tr.dataset.session = s.id;
    for (const v of [s.firstTime, s.identity ?? '', s.policy ?? '', s.statements, s.denied]) tr.append(el('td', v));
    tr.append(el('td', s.chain, s.chain === 'ok' ? 'ok' : 'bad'));
    tr.append(el('td', signatureShort(s), s.signature === 'signed' ? 'ok' : undefined));
    tr.append(el('td', s.state, s.state === 'interrupted' ? 'bad' : undefined));
    tr.onclick = () => showSession(s.id);
    body.append(tr);
  }
}
// Everything wrong with the trail at once (gaps, cut tails, chains deleted whole, tampering): a chain deleted whole
// has no session to open, so this list is where it shows. The latest findings closed by hand follow the open ones,
// marked closed, with who closed them and why; an approver may close an open one, with a reason. An unchanged list
// is not redrawn: that would wipe a reason being typed.
let findingsDrawnFor;
async function loadFindings() {
  const msg = document.getElementById('findings-msg');
  let open, closed;
  try {
    [open, closed] = await Promise.all([getJson('/api/v1/findings?limit=50'), getJson('/api/v1/findings?state=closed&limit=20')]);
  } catch (e) { setText(msg, String(e.message)); return; }
  setText(msg, '');
  findingsDrawnFor = isApprover;
  const items = [...open.items.map((f) => ({ ...f, closable: isApprover })), ...closed.items];
  const text = JSON.stringify(items);
  if (drawn['finding-list'] === text) return;
  drawn['finding-list'] = text;
  const body = document.getElementById('finding-list'); body.replaceChildren();
  if (!open.items.length) emptyRow(body, closed.items.length ? 'none open' : 'none: every chain checked so far is whole', 6, 'ok');
  for (const f of items) {
    const tr = el('tr', undefined, f.sessionKnown ? 'f' : undefined); tr.dataset.finding = f.sessionId; tr.dataset.id = f.id;
    if (f.closed) tr.classList.add('closed');
    tr.append(el('td', f.detectedAt), el('td', f.kind, f.closed ? undefined : 'bad'), el('td', f.sessionId + (f.sessionKnown ? '' : ' (no record)')));
    tr.append(el('td', f.seqFrom === f.seqTo ? f.seqFrom : f.seqFrom + '..' + f.seqTo), el('td', f.detail));
    tr.append(f.closed ? el('td', closedText(f.closed)) : f.closable ? closeCell(f) : el('td', 'open', 'bad'));
    if (f.sessionKnown) tr.onclick = () => showSession(f.sessionId);
    body.append(tr);
  }
}
const closedText = (c) => 'closed ' + c.at + ' by ' + c.by + (c.oidc ? ' (' + c.oidc.subject + ' at ' + c.oidc.issuer + ')' : '') + ': ' + c.reason;
// Closing takes an integrity alert off the open list: the API wants an approver and a reason, and keeps both.
function closeCell(f) {
  const td = el('td'); td.onclick = (ev) => ev.stopPropagation();
  const form = el('form'); const msg = el('span', '', 'msg');
  const reason = el('input'); reason.name = 'reason'; reason.placeholder = 'reason (required)'; reason.required = true; reason.maxLength = 1024;
  form.append(reason, ' ', el('button', 'Close'), ' ', msg);
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      await approverApi('/api/v1/findings/' + encodeURIComponent(f.id) + '/close', { method: 'POST', body: JSON.stringify({ reason: reason.value }) });
      await loadFindings();
    } catch (e) { setText(msg, String(e.message)); }
  };
  td.append(form);
  return td;
}
// What an event says besides its type: the statement, how a session ended, or an approver's control action as a
// sidecar applied it (control.applied, in that sidecar's own chain).
function eventText(e) {
  if (e.statement) return e.statement.text;
  if (e.end) return [e.end.reason, e.end.error].filter(Boolean).join(': ');
  const c = e.control;
  if (!c) return '';
  const target = c.session ? 'session ' + c.session : 'policy ' + c.policy.namespace + '/' + c.policy.name;
  return c.kind + ' ' + target + ' by ' + c.by + ': ' + c.reason + ' (' + c.sessionsEnded + ' session(s) ended' + (c.signed ? ', signed' : '') + ')';
}
// Ending a session is an approver's action: the form shows only once the token has loaded the approval queue.
function terminateForm(id) {
  const msg = el('span', '', 'msg');
  const form = controlForm('Terminate', () => '/api/v1/sessions/' + encodeURIComponent(id) + '/terminate', msg);
  form.id = 'terminate'; form.append(' ', msg);
  return form;
}
// Every control action carries why (the API refuses a blank reason); path() is read on submit, to see the fields then.
function controlForm(label, path, msg, done) {
  const form = el('form');
  const reason = el('input'); reason.name = 'reason'; reason.placeholder = 'reason (required)'; reason.required = true; reason.maxLength = 1024;
  form.append(reason, ' ', el('button', label));
  form.onsubmit = async (ev) => { ev.preventDefault(); await publishControl(path(), reason.value, msg); done?.(); };
  return form;
}
const AFTER = {
  terminate: 'its sidecar ends the session when it receives it',
  suspend: 'every sidecar serving it refuses new logins and ends its sessions',
  resume: 'its sidecars accept logins again',
};
const published = (c) => c.kind + (c.policy ? ' ' + c.policy.namespace + '/' + c.policy.name : '') + ' published (control ' + c.id + ')';
// msg names the action it reports on, so that a late confirmation does not overwrite a newer action's line.
async function publishControl(path, reason, msg) {
  try {
    const { control } = await approverApi(path, { method: 'POST', body: JSON.stringify({ reason }) });
    msg.dataset.control = control.id; msg.className = 'ok'; setText(msg, published(control) + ': ' + AFTER[control.kind]);
    confirmControl(control, msg);
  } catch (e) { msg.dataset.control = ''; msg.className = 'msg'; setText(msg, String(e.message)); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Did it work? Asks for up to 10 s which sidecars reported applying the action (GET /api/v1/control/{id}). A session
// has one sidecar; a policy may have many, so once the first reported the others get one more second.
async function sidecarReports(control) {
  const path = '/api/v1/control/' + encodeURIComponent(control.id) + '?since=' + encodeURIComponent(control.at);
  const ask = () => approverApi(path).then((b) => b.applied, () => []);
  for (let i = 0; i < 20; i++) {
    await sleep(500);
    const applied = await ask();
    if (applied.length === 0) continue;
    if (control.kind === 'terminate') return applied;
    await sleep(1000);
    const later = await ask();
    return later.length ? later : applied;
  }
  return [];
}
async function confirmControl(control, msg) {
  const applied = await sidecarReports(control);
  if (msg.dataset.control !== control.id) return;
  if (control.kind === 'terminate') {
    const s = applied[0]?.source;
    msg.className = s ? 'ok' : 'bad';
    setText(msg, s ? 'session ended by its sidecar (' + (s.pod || s.instance) + ', control ' + control.id + ')'
      : published(control) + ', but no sidecar confirmed it within 10 s: it may be cut off from NATS');
    return;
  }
  // A policy nobody reported is no failure: it may have no sidecar running.
  const ended = applied.reduce((n, a) => n + a.sessionsEnded, 0);
  msg.className = applied.length ? 'ok' : '';
  setText(msg, published(control) + ': ' + (applied.length ? 'applied by ' + applied.length + ' sidecar(s), ended ' + ended + ' session(s)'
    : 'no sidecar reported applying it within 10 s (a sidecar serving the policy applies it as soon as it is connected to NATS)'));
}
async function showSession(id) {
  const d = await getJson('/api/v1/sessions/' + encodeURIComponent(id));
  const box = document.getElementById('detail'); box.replaceChildren();
  box.append(el('h1', 'Session ' + id));
  box.append(el('p', 'chain: ' + d.session.chain + ' - ' + d.session.events + ' events', d.session.chain === 'ok' ? 'ok' : 'bad'));
  const sig = el('p', 'signature: ' + signatureLong(d.session), d.session.signature === 'signed' ? 'ok' : undefined); sig.id = 'signature';
  box.append(sig);
  // Interrupted: the sidecar stopped naming the chain (docs/audit.md#chain-heads) without ending the session.
  const state = el('p', 'state: ' + d.session.state + (d.session.lastHeard ? ' - its sidecar last named it at ' + d.session.lastHeard : ''), d.session.state === 'interrupted' ? 'bad' : undefined); state.id = 'state';
  box.append(state);
  // A sidecar's session ids are UUIDs; its own chain, or the collector's, is no session to end.
  if (isApprover && d.session.state !== 'ended' && /^[0-9a-f-]{36}$/.test(id)) box.append(terminateForm(id));
  for (const f of d.findings) box.append(el('p', f.kind + ': ' + f.detail + (f.closed ? ' (' + closedText(f.closed) + ')' : ''), f.closed ? 'closed' : 'bad'));
  const t = el('table'); t.id = 'statements';
  const head = el('tr'); for (const h of ['seq', 'time', 'type', 'decision', 'statement', 'result']) head.append(el('th', h));
  t.append(head);
  for (const e of d.events) {
    const tr = el('tr');
    const action = e.decision ? e.decision.action : '';
    tr.append(el('td', e.session.seq), el('td', e.time), el('td', e.type), el('td', action, action === 'deny' ? 'deny' : ''));
    const sql = el('td'); sql.append(el('code', eventText(e))); lookAlikeNote(sql, [eventText(e)]); tr.append(sql);
    tr.append(el('td', e.result ? [e.result.tag, e.result.changed !== undefined ? '(' + e.result.changed + ' rows changed in all)' : '', e.result.error ? 'ERROR ' + e.result.error.code : ''].filter(Boolean).join(' ') : ''));
    t.append(tr);
  }
  box.append(t);
}
const approvalMsg = (text) => { setText(document.getElementById('approval-msg'), text); };
let isApprover = false;
async function approverApi(path, init) {
  const r = await fetch(path, { ...init, headers: { ...auth(), 'content-type': 'application/json' } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401 && body.error && body.error.code === 'session_ended') ssoEnded();
  if (!r.ok) throw new Error(body.error ? body.error.message : 'HTTP ' + r.status);
  return body;
}
// The message line shows a failed load until a load succeeds, and an approve/reject result until the next action:
// the 5 s refresh must not wipe out what the approver just did.
let loadFailed = false;
async function loadApprovals() {
  if (!token() && !ssoName) return;
  let page;
  try { page = await approverApi('/api/v1/approvals?state=pending'); } catch (e) { approvalMsg(String(e.message)); loadFailed = true; isApprover = false; return; }
  isApprover = true;
  if (loadFailed) { approvalMsg(''); loadFailed = false; }
  drawRows('approval-list', page.approvals, 'nothing waits for a decision', 5, (a) => {
    const r = a.request;
    const tr = el('tr'); tr.dataset.approval = a.id;
    tr.append(el('td', r.requestedAt), el('td', askedBy(r)), policyCell(r), sqlCell(r));
    const act = el('td'); const reason = el('input'); reason.placeholder = 'reason'; reason.className = 'reason';
    // A policy with approval.grants lets one approval cover later statements of this shape for a while.
    const grant = r.grantMax ? grantChoice(r.grantMax) : undefined;
    for (const [label, decision, done] of [['Approve', 'approve', 'approved'], ['Reject', 'reject', 'rejected']]) {
      const b = el('button', label, decision); b.type = 'button';
      b.onclick = async () => {
        const body = reason.value ? { decision, reason: reason.value } : { decision };
        if (decision === 'approve' && grant && grant.value) body.grantFor = grant.value;
        try {
          await approverApi('/api/v1/approvals/' + encodeURIComponent(a.id), { method: 'POST', body: JSON.stringify(body) });
          approvalMsg(done + ': ' + a.id + (body.grantFor ? ', with a grant for ' + body.grantFor : ''));
        } catch (e) { approvalMsg(String(e.message)); }
        loadFailed = false;
        loadApprovals();
      };
      act.append(' ', b);
    }
    act.prepend(reason); if (grant) act.prepend(grant, ' '); tr.append(act);
    markIfLinked(tr, a.id);
    return tr;
  });
}
// Cells shared by the approval panels; all text, never markup.
const askedBy = (r) => r.identity.user || [r.identity.namespace, r.identity.serviceAccount].filter(Boolean).join('/');
const policyCell = (r) => el('td', r.policy.name + (r.rule ? ' / ' + r.rule : ''));
function sqlCell(r) {
  const td = el('td'); td.append(el('code', r.sql));
  // A prepared statement's execution: the values it runs with, which the approval is for.
  if (Array.isArray(r.params)) td.append(el('div', 'with ' + r.params.map((v, i) => boundValue(r, v, i)).join(', ')));
  // Letters that look like ASCII ones may not be (a Cyrillic а in a name or a literal): the approver is told.
  const foreign = nonAsciiCharacters([r.sql, ...(Array.isArray(r.params) ? r.params : [])].join(' '));
  if (foreign.length) td.append(el('div', 'not ASCII: ' + foreign.join(', '), 'nonascii'));
  // Which words pretend to be others (a table рayments, a user аna), in the statement and in who and what asked.
  const id = r.identity || {};
  lookAlikeNote(td, [r.sql, ...(Array.isArray(r.params) ? r.params : []), id.user, id.namespace, id.serviceAccount, id.pod, r.policy.namespace, r.policy.name, r.rule, r.session]);
  return td;
}
// A bound value marked with its format (display/bound-values.ts writes the same): a binary one as its \\x hex, a text
// one quoted, so a text value that reads like hex cannot pass for bytes.
function boundValue(r, v, i) {
  const f = Array.isArray(r.paramFormats) && r.paramFormats.length === r.params.length ? r.paramFormats[i] : undefined;
  const name = '$' + (i + 1);
  if (v === null) return name + ' = NULL';
  if (f === 'binary') return name + ' (binary) = ' + v;
  return name + (f === 'text' ? ' (text)' : '') + ' = ' + JSON.stringify(v);
}
function lookAlikeNote(parent, texts) {
  const words = lookAlikes(texts.filter((t) => typeof t === 'string').join(' '));
  if (words.length) parent.append(el('div', '⚠ look-alike letters: ' + words.join('; '), 'lookalike'));
}
function emptyRow(body, text, cols, cls) { const td = el('td', text, cls); td.colSpan = cols; body.append(el('tr')); body.lastChild.append(td); }
// A panel's rows, redrawn only when its list changed: the 5 s refresh must not wipe a reason being typed.
const drawn = {};
function drawRows(bodyId, items, emptyText, cols, row) {
  const text = JSON.stringify(items);
  if (drawn[bodyId] === text) return;
  drawn[bodyId] = text;
  const body = document.getElementById(bodyId); body.replaceChildren();
  if (!items.length) emptyRow(body, emptyText, cols);
  for (const item of items) body.append(row(item));
}
// A notification's link (?approval=<id>) points at one request: mark it wherever it is listed, bring it into view once.
const linkedApproval = new URLSearchParams(location.search).get('approval');
let linkedShown = false;
function markIfLinked(tr, id) {
  if (id !== linkedApproval) return;
  tr.className = 'linked';
  // After the row is in the table (drawRows appends what the row function returns).
  if (!linkedShown) { linkedShown = true; queueMicrotask(() => tr.scrollIntoView()); }
}
// Durations as the policy writes them (1h30m, 45s), to offer grants no longer than the request's grantMax.
function durationMs(text) {
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 }; let total = 0;
  for (const m of String(text).matchAll(/([0-9]+)(ms|s|m|h)/g)) total += Number(m[1]) * units[m[2]];
  return total;
}
function grantChoice(max) {
  const sel = el('select'); sel.className = 'grant'; sel.title = 'also approve later statements of this shape for';
  const opts = [['', 'this statement only']];
  for (const d of ['5m', '15m', '1h', '4h', '24h']) if (durationMs(d) < durationMs(max)) opts.push([d, 'and its shape for ' + d]);
  opts.push([max, 'and its shape for ' + max]);
  for (const [value, label] of opts) { const o = el('option', label); o.value = value; sel.append(o); }
  return sel;
}
// Grants given by approvals: shown to approvers, with Revoke. An unchanged list is not redrawn (a reason being typed).
async function loadGrants() {
  document.getElementById('grants').hidden = !isApprover;
  if (!isApprover) return;
  const msg = document.getElementById('grants-msg');
  let page;
  try { page = await approverApi('/api/v1/approvals?grants=active'); } catch (e) { setText(msg, String(e.message)); return; }
  drawRows('grant-list', page.approvals, 'no grant is active', 6, (a) => {
    const r = a.request;
    const tr = el('tr'); tr.dataset.grant = a.id;
    tr.append(el('td', a.grant.until), el('td', a.decision ? a.decision.by.name : ''), el('td', askedBy(r)), policyCell(r), sqlCell(r));
    const act = el('td'); const reason = el('input'); reason.placeholder = 'reason'; reason.className = 'reason';
    const b = el('button', 'Revoke', 'revoke'); b.type = 'button';
    b.onclick = async () => {
      try {
        await approverApi('/api/v1/approvals/' + encodeURIComponent(a.id) + '/revoke', { method: 'POST', body: JSON.stringify(reason.value ? { reason: reason.value } : {}) });
        setText(msg, 'revoked: ' + a.id);
      } catch (e) { setText(msg, String(e.message)); return; }
      drawn['grant-list'] = ''; loadGrants();
    };
    act.append(reason, ' ', b); tr.append(act);
    return tr;
  });
}
// Requests no longer pending, newest first: what became of each (who decided, their reason, the grant, or why it
// ended without a decision). A notification's follow-up links here.
const DECIDED_LIMIT = 50;
function outcomeText(a) {
  const d = a.decision, by = d ? d.by.name : '';
  const why = d && d.reason ? ': ' + d.reason : '';
  const grant = a.grant ? ' (grant ' + a.grant.state + (a.grant.until ? ' until ' + a.grant.until : ', asked for ' + a.grant.for) + ')' : '';
  switch (a.state) {
    case 'decided': return d.decision + ' by ' + by + why + ', not yet applied by its sidecar';
    case 'approved': return 'approved by ' + by + why + grant;
    case 'rejected': return 'rejected by ' + by + why;
    // Approved, but the sidecar denied it all the same (the policy was reloaded during the hold): it did not run.
    case 'denied': return 'denied by its sidecar' + (d && d.decision === 'approved' ? ' after ' + by + '’s approval' : '') + ': ' + ((a.closed && a.closed.reason) || 'no reason given');
    case 'expired': return d ? 'expired before ' + by + '’s decision reached its sidecar' : 'expired without a decision';
    case 'withdrawn': return 'withdrawn: the client cancelled or went away';
    case 'refused': return 'refused: its sidecar could not hold it';
    default: return String(a.state);
  }
}
async function loadDecided() {
  document.getElementById('decided').hidden = !isApprover;
  if (!isApprover) return;
  const msg = document.getElementById('decided-msg');
  let page;
  try { page = await approverApi('/api/v1/approvals?state=decided,approved,rejected,denied,expired,withdrawn,refused&limit=' + DECIDED_LIMIT); } catch (e) { setText(msg, String(e.message)); return; }
  setText(msg, '');
  drawRows('decided-list', page.approvals, 'nothing decided yet', 5, (a) => {
    const r = a.request;
    const tr = el('tr'); tr.dataset.decided = a.id;
    tr.append(el('td', r.requestedAt), el('td', askedBy(r)), policyCell(r), sqlCell(r));
    tr.append(el('td', outcomeText(a), a.state === 'approved' ? 'ok' : a.state === 'rejected' || a.state === 'denied' ? 'deny' : undefined));
    markIfLinked(tr, a.id);
    return tr;
  });
}
// namespace/name, or a bare name (a policy without a namespace: _), as the API's path segments; the API judges the names.
function policyPath(ref) {
  const i = ref.indexOf('/');
  return (i < 0 ? ['_', ref] : [ref.slice(0, i), ref.slice(i + 1)]).map(encodeURIComponent).join('/');
}
const suspensionAction = document.getElementById('suspension-action');
const suspendPolicy = el('input'); suspendPolicy.name = 'policy'; suspendPolicy.placeholder = 'namespace/policy'; suspendPolicy.required = true;
const suspendForm = controlForm('Suspend', () => '/api/v1/policies/' + policyPath(suspendPolicy.value.trim()) + '/suspend', suspensionAction, loadSuspensions);
suspendForm.id = 'suspend'; suspendForm.prepend(suspendPolicy, ' '); suspensionAction.before(suspendForm);
// Shown to approvers only, like the queue (whose load tells whether the token is an approver's). An unchanged list
// is not redrawn: that would wipe a Resume reason being typed.
async function loadSuspensions() {
  document.getElementById('suspensions').hidden = !isApprover;
  if (!isApprover) return;
  const msg = document.getElementById('suspensions-msg');
  let page;
  try { page = await approverApi('/api/v1/suspensions'); } catch (e) { setText(msg, String(e.message)); return; }
  setText(msg, '');
  drawRows('suspension-list', page.suspensions, 'no policy is suspended', 6, (s) => {
    const ref = s.policy.namespace + '/' + s.policy.name;
    const tr = el('tr'); tr.dataset.policy = ref;
    tr.append(el('td', ref), el('td', s.at), el('td', s.by), el('td', s.reason), el('td', s.signed ? 'yes' : 'no', s.signed ? 'ok' : undefined));
    const act = el('td'); act.append(controlForm('Resume', () => '/api/v1/policies/' + policyPath(ref) + '/resume', suspensionAction, loadSuspensions));
    tr.append(act);
    return tr;
  });
}
// The findings are everyone's; only their Close forms depend on whether the token is an approver's.
const loadApproverPanels = () => loadApprovals().then(loadGrants).then(loadDecided).then(loadSuspensions)
  .then(() => { if (findingsDrawnFor !== undefined && findingsDrawnFor !== isApprover) loadFindings(); });
document.getElementById('filter').onsubmit = (ev) => { ev.preventDefault(); nextCursorUsed = false; loadSessions(); };
let nextCursorUsed = false;
document.getElementById('more').onclick = () => { nextCursorUsed = true; loadSessions(true); };
document.getElementById('token-form').onsubmit = (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('pgwarden-token', document.getElementById('token').value);
  document.getElementById('token').value = '';
  loadApproverPanels();
  loadFindings();
  loadSessions().then(follow);
};
// New sessions as they start: the stream's server-sent events, read with fetch so the token goes along. A refused
// or dropped stream is retried after a pause (a new token restarts it at once).
let following;
async function follow() {
  following?.abort();
  const ac = (following = new AbortController());
  try {
    const r = await fetch('/api/v1/stream?type=session.start', { headers: auth(), signal: ac.signal });
    if (!r.ok || !r.body) return;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\\n\\n')) !== -1) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        // A new session: refresh the first page, unless the reader is paging through older ones.
        if (block.split('\\n').includes('event: audit') && !nextCursorUsed) loadSessions();
      }
    }
  } catch (e) { if (ac.signal.aborted) return; }
  setTimeout(() => { if (following === ac) follow(); }, 3000);
}
// Signed in through the identity provider (/auth/*, when the collector offers it): the session is an HttpOnly
// cookie the page never sees; /auth/me says whose it is (404: no such sign-in here, 401: not signed in).
let ssoName = '';
async function loadSso() {
  const r = await fetch('/auth/me').catch(() => undefined);
  if (!r || r.status === 404) return;
  if (r.ok) {
    ssoName = (await r.json()).name;
    const u = document.getElementById('sso-user');
    u.textContent = 'signed in as ' + ssoName; u.hidden = false;
    document.getElementById('sso-out').hidden = false;
  } else {
    const body = await r.json().catch(() => ({}));
    ssoEnded();
    if (body.error && body.error.code === 'session_ended') approvalMsg(body.error.message);
  }
}
// The sign-in ended (its maximum age, idle, or the identity provider would not renew it: the API's 401
// session_ended says which, and the caller shows it): offer to sign in again.
function ssoEnded() {
  ssoName = '';
  document.getElementById('sso-user').hidden = true;
  document.getElementById('sso-out').hidden = true;
  const a = document.getElementById('sso-in');
  a.href = ssoLogin(); a.hidden = false;
  a.onclick = () => { a.href = ssoLogin(); };
}
// Back to this very page once signed in (a notification's ?approval= link included); /auth/login itself accepts
// nothing but a path of this collector.
function ssoLogin() {
  return '/auth/login?return=' + encodeURIComponent(location.pathname + location.search + location.hash);
}
document.getElementById('sso-out').onclick = async () => {
  await fetch('/auth/logout', { method: 'POST' }).catch(() => undefined);
  location.reload();
};
loadSso().then(() => {
  loadApproverPanels();
  setInterval(loadApproverPanels, 5000);
  loadFindings();
  setInterval(loadFindings, 15000);
  loadSessions().then(follow);
});
</script></body></html>
`;

const SCRIPT = /<script>([\s\S]*)<\/script>/.exec(WEB_UI_HTML)?.[1] ?? '';

/**
 * The page's Content-Security-Policy: its one inline script by hash (CSP3 §8.3), so that markup which ever got into
 * the page could not run a script of its own; no frames of it on other sites (clickjacking an approver's Approve
 * button); no plugins, no <base>, no form posts anywhere.
 */
export const WEB_UI_CSP = [
  "default-src 'none'",
  "connect-src 'self'",
  `script-src 'sha256-${createHash('sha256').update(SCRIPT, 'utf8').digest('base64')}'`,
  "style-src 'unsafe-inline'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');
