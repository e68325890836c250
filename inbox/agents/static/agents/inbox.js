/* Switchboard inbox: the progressive layer over server-rendered pages.
 * Live updates over the agents' websocket (re-fetching the server's own HTML for what changed), keyboard
 * shortcuts, and the composer (counter, note mode, canned responses, typing relay, drafts kept locally).
 * Everything still works without it: the forms post and redirect. */
(() => {
  'use strict';
  const $ = (s, r = document) => r.querySelector(s);
  const $$ = (s, r = document) => [...r.querySelectorAll(s)];
  const body = document.body;
  const page = body.dataset.page;
  const conversationId = body.dataset.conversation ? +body.dataset.conversation : null;

  // Selects that act at once (filters, presence); the button stays for keyboard and no-JS users.
  $$('select[data-autosubmit]').forEach((s) => s.addEventListener('change', () => s.form.requestSubmit()));

  // --- Live updates --------------------------------------------------------------------------------------------
  const liveEl = $('[data-sb="live-state"]');
  let ws = null, tries = 0, timer = 0;
  function setLive(ok) {
    if (!liveEl) return;
    liveEl.hidden = ok;
    liveEl.textContent = ok ? '' : 'Live updates paused — reconnecting…';
    body.dataset.live = ok ? 'on' : 'off';
  }
  function connect() {
    if (!body.dataset.user) return;
    ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/agent/');
    // Refresh once the socket is open, the first time too: whatever changed between the server rendering this page
    // and the socket joining its groups (a reply sent by the worker meanwhile) was announced to nobody here.
    ws.onopen = () => { tries = 0; setLive(true); refresh(); };
    ws.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (err) { /* not JSON: ignore */ } };
    ws.onclose = (e) => {
      ws = null;
      if (e.code === 4401) { setLive(false); liveEl && (liveEl.textContent = 'Signed out: reload to sign in again.'); return; }
      setLive(false);
      const wait = Math.min(30000, 500 * 2 ** tries++) * (0.5 + Math.random() / 2);
      setTimeout(connect, wait);
    };
  }
  function send(frame) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(frame)); }

  function onEvent(ev) {
    if (!ev || !ev.type) return;
    if (ev.type === 'visitor.typing') {
      if (ev.conversation === conversationId) showTyping(ev.state);
      return;
    }
    if (page === 'inbox') refresh();
    else if (page === 'dashboard') refreshSoon();
    else if (page === 'conversation') {
      const mine = ev.conversation === conversationId || ev.to === conversationId ||
        (ev.message && document.getElementById('m' + ev.message));
      if (mine) refresh();
    }
  }
  function refresh() { clearTimeout(timer); timer = setTimeout(doRefresh, 150); }
  // The dashboard: at most one refresh every 5 s however busy the queues are, and every 30 s regardless
  // (waits grow while nothing happens).
  let lastDash = 0, dashTimer = 0;
  function refreshSoon() {
    if (dashTimer) return;
    dashTimer = setTimeout(() => { dashTimer = 0; lastDash = Date.now(); doRefresh(); }, Math.max(0, 5000 - (Date.now() - lastDash)));
  }
  let refreshing = false, again = false;
  async function doRefresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      if (page === 'inbox') await swapFromPage(location.href, ['[data-sb="rows"]', '[data-sb="queue-counts"]']);
      else if (page === 'dashboard') {
        const box = $('[data-sb="dashboard-body"]');
        const r = await fetch(box.dataset.refresh, { credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch' } });
        if (r.ok) box.innerHTML = await r.text();
      }
      else if (page === 'conversation') {
        const box = $('[data-sb="timeline-box"]');
        const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
        const r = await fetch(box.dataset.refresh, { credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch' } });
        if (r.ok) { box.innerHTML = await r.text(); if (atBottom) $('#composer').scrollIntoView({ block: 'end' }); }
        await swapFromPage(location.pathname, ['[data-sb="conversation-status"]', '[data-sb="conversation-assignee"]', '[data-sb="conversation-language"]']);
      }
    } catch (e) { /* offline: the next event or reconnect refreshes */ } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }
  async function swapFromPage(url, selectors) {
    const r = await fetch(url, { credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch' } });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
    const selected = selectedId();
    for (const sel of selectors) { const a = $(sel), b = $(sel, doc); if (a && b) a.replaceWith(document.importNode(b, true)); }
    if (selected) select(rows().findIndex((row) => row.dataset.id === selected), false);
  }

  // --- Keyboard -----------------------------------------------------------------------------------------------
  const rows = () => $$('[data-sb="conversation-row"]');
  let cursor = -1;
  function selectedId() { const r = rows()[cursor]; return r ? r.dataset.id : null; }
  function select(i, focus = true) {
    const list = rows();
    if (!list.length || i < 0) { cursor = -1; return; }
    cursor = Math.max(0, Math.min(i, list.length - 1));
    list.forEach((r, n) => r.classList.toggle('selected', n === cursor));
    const link = $('a', list[cursor]);
    if (focus && link) link.focus();
  }
  function typingInField(e) {
    const t = e.target;
    return t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName));
  }
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey && e.key === 'Enter' && e.target && e.target.form && e.target.form.id === 'composer') {
      e.preventDefault(); e.target.form.requestSubmit(); return;
    }
    if (e.altKey || e.ctrlKey || e.metaKey || typingInField(e)) return;
    const k = e.key;
    const click = (sel) => { const el = $(sel); if (el) { e.preventDefault(); el.click(); } };
    if (k === '?') { const d = $('#shortcuts'); if (d) { e.preventDefault(); d.showModal(); } }
    else if (k === 'n') click('[data-sb="take-next"]');
    else if (k === '/') { const s = $('[data-sb="search"]'); if (s) { e.preventDefault(); s.focus(); s.select(); } }
    else if (page === 'inbox' && (k === 'j' || k === 'k')) { e.preventDefault(); select(cursor + (k === 'j' ? 1 : -1)); }
    else if (page === 'inbox' && (k === 'Enter' || k === 'o') && cursor >= 0) { e.preventDefault(); $('a', rows()[cursor]).click(); }
    else if (page === 'conversation' && k === 'r') { e.preventDefault(); setKind('reply'); $('[data-sb="reply-text"]').focus(); }
    else if (page === 'conversation' && k === 'p') { e.preventDefault(); setKind('note'); $('[data-sb="reply-text"]').focus(); }
    else if (page === 'conversation' && k === 'e') click('[data-sb="resolve"]');
    else if (page === 'conversation' && k === 'u') click('a.back');
  });

  // --- Composer -----------------------------------------------------------------------------------------------
  const composer = $('#composer');
  const text = $('[data-sb="reply-text"]');
  const counter = $('[data-sb="reply-count"]');
  const draftKey = conversationId ? 'switchboard:draft:' + conversationId : null;
  function kind() { const r = $('input[name="kind"]:checked'); return r ? r.value : 'reply'; }
  function setKind(v) { const r = $(`input[name="kind"][value="${v}"]`); if (r) { r.checked = true; update(); } }
  function update() {
    if (!composer) return;
    const note = kind() === 'note';
    composer.classList.toggle('note-mode', note);
    text.placeholder = note ? 'A private note for the team…' : 'Write a reply… (/ for canned responses)';
    const max = +text.dataset.max || 0, n = [...text.value].length;
    const thread = $('[data-sb="thread"]');
    if (counter) {
      counter.textContent = note || !max ? '' : `${n} / ${max}` + (n > max ? (thread && thread.checked ? ' — will go as a thread' : ' — too long') : '');
      counter.classList.toggle('over', !note && max > 0 && n > max && !(thread && thread.checked));
    }
  }
  let typingSent = 0, typingOffTimer = 0;
  function typing(state) {
    if (!conversationId) return;
    send({ type: 'typing', conversation: conversationId, state });
    typingSent = state ? Date.now() : 0;
  }
  if (composer) {
    if (draftKey && !text.value) text.value = localStorage.getItem(draftKey) || '';
    composer.addEventListener('change', update);
    text.addEventListener('input', () => {
      update();
      if (draftKey) { if (text.value) localStorage.setItem(draftKey, text.value); else localStorage.removeItem(draftKey); }
      if (kind() === 'reply' && text.value && Date.now() - typingSent > 3000) typing(true);
      clearTimeout(typingOffTimer);
      typingOffTimer = setTimeout(() => { if (typingSent) typing(false); }, 5000);
    });
    composer.addEventListener('submit', (e) => {
      const files = $('[data-sb="files"]');
      if (files && kind() === 'reply') {
        const maxN = +files.dataset.maxFiles, maxB = +files.dataset.maxMb * 2 ** 20;
        const list = [...(files.files || [])];
        const big = list.find((f) => f.size > maxB);
        if (list.length > maxN || big) {
          e.preventDefault();
          alert(big ? `${big.name} is larger than ${files.dataset.maxMb} MB.` : `At most ${maxN} files per reply.`);
          return;
        }
      }
      if (typingSent) typing(false);
      if (draftKey) localStorage.removeItem(draftKey);
      const b = $('[data-sb="send"]'); if (b) { b.disabled = true; b.textContent = 'Sending…'; }
    });
    const canned = $('[data-sb="canned"]');
    if (canned) canned.addEventListener('change', () => {
      const opt = canned.selectedOptions[0];
      if (opt && opt.dataset.text) insert(opt.dataset.text);
      canned.value = '';
      text.focus();
    });
    // "/shortcut" then space or Enter at the start of a word: replaced by that canned response.
    text.addEventListener('keydown', (e) => {
      if (!canned || (e.key !== ' ' && e.key !== 'Tab')) return;
      const before = text.value.slice(0, text.selectionStart);
      const m = before.match(/(^|\s)\/([\w-]+)$/);
      if (!m) return;
      const opt = [...canned.options].find((o) => o.textContent.startsWith('/' + m[2] + ' '));
      if (!opt) return;
      e.preventDefault();
      text.setRangeText(opt.dataset.text, text.selectionStart - m[2].length - 1, text.selectionStart, 'end');
      update();
    });
    update();
  }
  function insert(value) {
    const start = text.selectionStart || 0, end = text.selectionEnd || 0;
    text.setRangeText(value, start, end, 'end');
    text.dispatchEvent(new Event('input'));
  }
  let typingHide = 0;
  function showTyping(on) {
    const el = $('[data-sb="visitor-typing"]');
    if (!el) return;
    el.hidden = !on;
    clearTimeout(typingHide);
    if (on) typingHide = setTimeout(() => { el.hidden = true; }, 8000);
  }

  if (page === 'conversation' && location.hash !== '#composer') {
    const last = $$('[data-sb="message"]').pop();
    if (last) last.scrollIntoView({ block: 'nearest' });
  }
  if (page === 'inbox') select(-1);
  if (page === 'dashboard') setInterval(refreshSoon, 30000);
  connect();
})();
