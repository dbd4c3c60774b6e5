/**
 * The collector's single-page UI: a session list (newest first, chain status) and a session's statements in
 * order. Plain HTML + JS over the public JSON API; no build step, no third-party code. All values are inserted
 * with textContent, never as HTML, because statements and identities are attacker-influenced text.
 */
export const WEB_UI_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pgwarden collector</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;height:100vh}
#list{width:42%;overflow:auto;border-right:1px solid #ccc}#detail{flex:1;overflow:auto;padding:0 1em}
table{border-collapse:collapse;width:100%}td,th{padding:4px 6px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
tr.s{cursor:pointer}tr.s:hover{background:#f4f4ff}.ok{color:#070}.bad{color:#b00;font-weight:bold}.deny{color:#b00}
code{white-space:pre-wrap;word-break:break-all}h1{font-size:16px;margin:8px}
</style></head><body>
<div id="list"><h1>Sessions</h1><table><thead><tr><th>started</th><th>identity</th><th>policy</th><th>stmts</th><th>denied</th><th>chain</th></tr></thead><tbody id="sessions"></tbody></table></div>
<div id="detail"><p>Select a session.</p></div>
<script>
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; };
async function getJson(path) { const r = await fetch(path); if (!r.ok) throw new Error(path + ': ' + r.status); return r.json(); }
async function loadSessions() {
  const page = await getJson('/api/v1/sessions?limit=200');
  const body = document.getElementById('sessions'); body.replaceChildren();
  for (const s of page.items) {
    const tr = el('tr', undefined, 's'); tr.dataset.session = s.id;
    for (const v of [s.firstTime, s.identity ?? '', s.policy ?? '', s.statements, s.denied]) tr.append(el('td', v));
    tr.append(el('td', s.chain, s.chain === 'ok' ? 'ok' : 'bad'));
    tr.onclick = () => showSession(s.id);
    body.append(tr);
  }
}
async function showSession(id) {
  const d = await getJson('/api/v1/sessions/' + encodeURIComponent(id));
  const box = document.getElementById('detail'); box.replaceChildren();
  box.append(el('h1', 'Session ' + id));
  box.append(el('p', 'chain: ' + d.session.chain + ' - ' + d.session.events + ' events', d.session.chain === 'ok' ? 'ok' : 'bad'));
  for (const f of d.findings) box.append(el('p', f.kind + ': ' + f.detail, 'bad'));
  const t = el('table'); t.id = 'statements';
  t.append(Object.assign(el('tr'), { innerHTML: '<th>seq</th><th>time</th><th>type</th><th>decision</th><th>statement</th><th>result</th>' }));
  for (const e of d.events) {
    const tr = el('tr');
    const action = e.decision ? e.decision.action : '';
    tr.append(el('td', e.session.seq), el('td', e.time), el('td', e.type), el('td', action, action === 'deny' ? 'deny' : ''));
    const sql = el('td'); sql.append(el('code', e.statement ? e.statement.text : '')); tr.append(sql);
    tr.append(el('td', e.result ? [e.result.tag, e.result.error ? 'ERROR ' + e.result.error.code : ''].filter(Boolean).join(' ') : ''));
    t.append(tr);
  }
  box.append(t);
}
loadSessions().catch((e) => document.getElementById('detail').append(el('p', String(e), 'bad')));
const live = new EventSource('/api/v1/stream?type=session.start');
live.addEventListener('audit', () => loadSessions());
</script></body></html>
`;
