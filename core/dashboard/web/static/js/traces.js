// The trace list: newest first, pages fetched as the sentinel below the table
// scrolls into view, filters that restart the list, and a live tail that
// prepends traces as they are recorded.

import {getJSON, getKey, followLive, isAdminKey} from './api.js';
import {$, h, fill} from './dom.js';
import * as fmt from './format.js';

const PAGE = 50;

let rows, sentinel, table, errorBox, liveStatus, liveToggle, form;
let filters = {};
let cursor = null;
let done = false;
let loading = false;
let controller = null;
let seen = new Set();
let observer = null;
let liveController = null;

export function init() {
  rows = $('#trace-rows');
  sentinel = $('#trace-sentinel');
  table = $('#trace-table');
  errorBox = $('#traces-error');
  liveStatus = $('#live-status');
  liveToggle = $('#live-toggle');
  form = $('#filters');

  observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, {rootMargin: '0px 0px 600px 0px'});

  let debounce = 0;
  form.addEventListener('input', (e) => {
    if (e.target.tagName === 'SELECT') return;
    clearTimeout(debounce);
    debounce = setTimeout(applyFilters, 350);
  });
  form.addEventListener('change', (e) => {
    clearTimeout(debounce);
    applyFilters();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(debounce);
    applyFilters();
  });
  form.addEventListener('reset', () => {
    clearTimeout(debounce);
    setTimeout(applyFilters, 0); // after the form has cleared its fields
  });
  liveToggle.addEventListener('change', () => (liveToggle.checked ? startLive() : stopLive()));
  rows.addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (!tr || e.target.closest('a')) return; // links navigate by themselves
    location.hash = `#/traces/${encodeURIComponent(tr.dataset.id)}`;
  });
}

function readFilters() {
  const f = {};
  for (const [k, v] of new FormData(form)) {
    const t = String(v).trim();
    if (t === '') continue;
    // The API refuses a negative or non-numeric minimum: leave it out.
    if (k === 'min_latency_ms' && !(Number(t) >= 0)) continue;
    f[k] = t;
  }
  return f;
}

function applyFilters() {
  if (!getKey()) return; // signed out: the form was only cleared
  const next = readFilters();
  if (JSON.stringify(next) === JSON.stringify(filters) && rows.childElementCount > 0) return;
  filters = next;
  reset();
}

/** Fills the model and provider suggestions. */
export function suggest(listId, values) {
  const list = $(`#${listId}`);
  const have = new Set(Array.from(list.options, (o) => o.value));
  for (const v of values) {
    if (!have.has(v)) {
      list.append(h('option', {value: v}));
      have.add(v);
    }
  }
}

/** Empties the list and loads the first page with the current filters. */
export function reset() {
  if (controller) controller.abort();
  controller = null;
  loading = false;
  cursor = null;
  done = false;
  seen = new Set();
  rows.replaceChildren();
  errorBox.hidden = true;
  const admin = isAdminKey();
  for (const th of document.querySelectorAll('.col-tenant')) th.hidden = !admin;
  loadMore();
}

/** Stops everything (sign-out). */
export function clear() {
  if (controller) controller.abort();
  controller = null;
  observer?.disconnect();
  stopLive();
  liveToggle.checked = false;
  rows.replaceChildren();
  filters = {};
  form.reset();
}

function setState(state, message) {
  table.dataset.state = state;
  table.setAttribute('aria-busy', state === 'loading' ? 'true' : 'false');
  sentinel.dataset.state = state;
  sentinel.textContent = message;
}

async function loadMore() {
  if (loading || done) return;
  loading = true;
  const ctl = new AbortController();
  controller = ctl;
  setState('loading', 'Loading traces…');
  try {
    const page = await getJSON('traces', {...filters, limit: PAGE, cursor}, {signal: ctl.signal});
    if (controller !== ctl) return;
    const frag = document.createDocumentFragment();
    for (const t of page.data || []) {
      if (seen.has(t.id)) continue;
      seen.add(t.id);
      frag.append(row(t));
    }
    rows.append(frag);
    suggest('providers-list', [...new Set((page.data || []).map((t) => t.provider).filter(Boolean))]);
    cursor = page.next_cursor || null;
    done = !cursor;
    loading = false;
    controller = null;
    const n = rows.childElementCount;
    rows.dataset.count = String(n);
    if (done) setState('end', n === 0 ? (Object.keys(filters).length ? 'No traces match these filters.' : 'No traces yet.') : `All ${fmt.int(n)} traces loaded.`);
    else setState('idle', `${fmt.int(n)} traces shown; scroll for more.`);
    // Observe afresh: the observer reports the sentinel's current state at
    // once, so a short page that leaves it in view loads the next one.
    if (!done) {
      observer.unobserve(sentinel);
      observer.observe(sentinel);
    }
  } catch (err) {
    if (controller !== ctl) return;
    loading = false;
    controller = null;
    if (err.name === 'AbortError') return;
    setState('error', '');
    if (err.status === 401) return;
    fill(errorBox, h('strong', null, 'Could not load traces: '), err.message, ' ',
      h('button', {type: 'button', class: 'link', onclick: () => loadMore()}, 'Retry'));
    errorBox.hidden = false;
  }
}

function statusBadge(t) {
  const ok = t.status === 'ok';
  return h('span', {class: ['badge', ok ? 'badge-ok' : 'badge-err'], title: t.error || ''},
    t.status || '?', ok || !t.http_status ? null : ` ${t.http_status}`);
}

function row(t) {
  const tokens = t.tokens || {};
  const tokTitle = fmt.isNum(tokens.total)
    ? `prompt ${fmt.int(tokens.prompt)} · completion ${fmt.int(tokens.completion)}${tokens.cached ? ` · cached ${fmt.int(tokens.cached)}` : ''} (${t.usage_source || 'unknown'})`
    : 'usage unknown';
  const href = `#/traces/${encodeURIComponent(t.id)}`;
  return h('tr', {'data-testid': 'trace-row', 'data-id': t.id, 'data-request-id': t.request_id || '', 'data-status': t.status, 'data-stream': String(Boolean(t.stream))},
    h('td', {class: 'nowrap'}, h('a', {href, title: fmt.dateTime(t.created_at)}, fmt.time(t.created_at))),
    isAdminKey() ? h('td', {class: 'col-tenant'}, t.tenant || '') : null,
    h('td', {class: 'model'}, h('span', {class: 'truncate', title: t.upstream_model && t.upstream_model !== t.model ? `${t.model} → ${t.upstream_model}` : (t.model || '')}, t.model || '(none)'),
      t.stream ? h('span', {class: 'tag', title: 'streamed'}, 'stream') : null,
      t.endpoint && t.endpoint !== 'chat.completions' ? h('span', {class: 'tag'}, t.endpoint) : null),
    h('td', null, t.provider || fmt.DASH),
    h('td', null, statusBadge(t)),
    h('td', {class: 'num', title: tokTitle}, fmt.isNum(tokens.total) ? fmt.int(tokens.total) : fmt.DASH),
    h('td', {class: 'num'}, fmt.usd(t.cost_micros)),
    h('td', {class: 'num', title: `overhead ${fmt.ms(t.overhead_ms)}${fmt.isNum(t.ttfb_ms) ? ` · TTFB ${fmt.ms(t.ttfb_ms)}` : ''}`}, fmt.ms(t.latency_ms)));
}

// The live tail has no server-side filters: apply the list's here.
function matches(t) {
  if (filters.model && t.model !== filters.model) return false;
  if (filters.provider && t.provider !== filters.provider) return false;
  if (filters.status && t.status !== filters.status) return false;
  if (filters.stream && String(Boolean(t.stream)) !== filters.stream) return false;
  if (filters.min_latency_ms && !(t.latency_ms >= Number(filters.min_latency_ms))) return false;
  return true;
}

function onLiveTrace(t) {
  if (!t || !t.id || seen.has(t.id) || !matches(t)) return;
  seen.add(t.id);
  const tr = row(t);
  tr.classList.add('fresh');
  rows.prepend(tr);
  rows.dataset.count = String(rows.childElementCount);
  suggest('models-list', t.model ? [t.model] : []);
  suggest('providers-list', t.provider ? [t.provider] : []);
}

function setLive(state, text) {
  liveStatus.dataset.state = state;
  liveStatus.textContent = text;
}

async function startLive() {
  stopLive();
  const ctl = new AbortController();
  liveController = ctl;
  let delay = 1000;
  setLive('connecting', 'Connecting…');
  while (liveController === ctl) {
    try {
      await followLive({}, onLiveTrace, {signal: ctl.signal, onOpen: () => {
        delay = 1000;
        setLive('on', 'Live');
      }});
      if (liveController !== ctl) return;
      setLive('connecting', 'Reconnecting…');
    } catch (err) {
      if (liveController !== ctl || err.name === 'AbortError') return;
      if (err.status === 401) {
        setLive('off', '');
        return;
      }
      setLive('error', `Live tail interrupted (${err.message}); retrying…`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

export function stopLive() {
  if (liveController) liveController.abort();
  liveController = null;
  if (liveStatus) setLive('off', '');
}

/** Restarts the live tail if it is on (scope change). */
export function restartLive() {
  if (liveToggle.checked) startLive();
}
