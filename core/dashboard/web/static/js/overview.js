// The overview: summary cards and charts for one time window.
//
// Each card exposes its number in data-value, in a fixed format (see
// ../README.md): the displayed text may be rounded or grouped, data-value
// never is.

import {getJSON} from './api.js';
import {$, h, fill} from './dom.js';
import * as fmt from './format.js';
import {requestsChart, latencyChart, costChart} from './charts.js';

const WINDOW_KEY = 'loom.dashboard.window';
export const WINDOWS = ['1h', '24h', '7d', '30d'];

let controller = null;
let onModels = () => {};

export function storedWindow() {
  const w = localStorage.getItem(WINDOW_KEY);
  return WINDOWS.includes(w) ? w : '24h';
}

export function init({models}) {
  onModels = models;
  const current = storedWindow();
  for (const input of document.querySelectorAll('input[name="window"]')) {
    input.checked = input.value === current;
    input.addEventListener('change', () => {
      if (!input.checked) return;
      localStorage.setItem(WINDOW_KEY, input.value);
      load();
    });
  }
  $('#refresh').addEventListener('click', () => load());
}

function setCard(id, {value, text, sub = '', attrs = {}}) {
  const card = $(`[data-testid="${id}"]`);
  card.dataset.value = value;
  for (const [k, v] of Object.entries(attrs)) card.dataset[k] = String(v);
  $('.value', card).textContent = text;
  $('.sub', card).textContent = sub;
}

const fixed = (v, digits) => (fmt.isNum(v) ? v.toFixed(digits) : '');

function renderCards(o) {
  const tokens = o.tokens || {};
  setCard('card-requests', {value: String(o.requests ?? 0), text: fmt.int(o.requests ?? 0),
    sub: `${fmt.int(o.errors ?? 0)} errors`});
  const rate = fmt.isNum(o.error_rate) ? o.error_rate : (o.requests ? (o.errors || 0) / o.requests : 0);
  setCard('card-error-rate', {value: rate.toFixed(4), text: fmt.pct(rate),
    sub: `${fmt.int(o.errors ?? 0)} of ${fmt.int(o.requests ?? 0)}`, attrs: {errors: o.errors ?? 0}});
  setCard('card-tokens', {value: String(tokens.total ?? 0), text: fmt.compact(tokens.total ?? 0),
    sub: `${fmt.int(tokens.prompt ?? 0)} prompt · ${fmt.int(tokens.completion ?? 0)} completion`,
    attrs: {prompt: tokens.prompt ?? 0, completion: tokens.completion ?? 0, cached: tokens.cached ?? 0}});
  setCard('card-cost', {value: String(o.cost_micros ?? 0), text: fmt.usd(o.cost_micros ?? 0),
    sub: o.requests ? `${fmt.usd(Math.round((o.cost_micros || 0) / o.requests))} per request` : ''});
  // Without requests the API reports 0 percentiles: show them as unknown.
  const lat = o.requests ? o.latency_ms || {} : {};
  setCard('card-p95-latency', {value: fixed(lat.p95, 3), text: fmt.ms(lat.p95),
    sub: `p50 ${fmt.ms(lat.p50)} · p99 ${fmt.ms(lat.p99)}`});
  const ovh = o.requests ? o.overhead_ms || {} : {};
  setCard('card-p95-overhead', {value: fixed(ovh.p95, 3), text: fmt.ms(ovh.p95),
    sub: `p50 ${fmt.ms(ovh.p50)} · p99 ${fmt.ms(ovh.p99)}`});
}

/** Loads the cards and charts for the selected window. */
export async function load() {
  const win = storedWindow();
  if (controller) controller.abort();
  const ctl = new AbortController();
  controller = ctl;
  const cards = $('#cards');
  cards.dataset.state = 'loading';
  cards.setAttribute('aria-busy', 'true');
  const errorBox = $('#overview-error');
  try {
    const [summary, series] = await Promise.all([
      getJSON('analytics/summary', {window: win}, {signal: ctl.signal}),
      getJSON('analytics/timeseries', {window: win}, {signal: ctl.signal}),
    ]);
    if (controller !== ctl) return;
    errorBox.hidden = true;
    renderCards(summary.overall || {});
    cards.dataset.window = summary.window || win;
    $('#overview-range').textContent = summary.from && summary.to
      ? `${fmt.dateTime(summary.from).slice(0, 16)} → ${fmt.dateTime(summary.to).slice(0, 16)} (last ${win})`
      : `last ${win}`;
    requestsChart($('#chart-requests'), series);
    latencyChart($('#chart-latency'), series);
    costChart($('#chart-cost'), summary.by_model);
    onModels((summary.by_model || []).map((m) => m.model).filter(Boolean));
    cards.dataset.state = 'ready';
  } catch (err) {
    if (err.name === 'AbortError' || controller !== ctl) return;
    cards.dataset.state = 'error';
    if (err.status === 401) return;
    fill(errorBox, h('strong', null, 'Could not load the overview: '), err.message);
    errorBox.hidden = false;
  } finally {
    if (controller === ctl) {
      cards.removeAttribute('aria-busy');
      controller = null;
    }
  }
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
}
