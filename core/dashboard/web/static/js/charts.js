// Hand-written SVG charts: columns (requests and errors per bucket), lines
// (latency percentiles) and horizontal bars (cost by model). Each chart is
// drawn at its container's pixel width and redrawn when that changes.

import {h, s, fill} from './dom.js';
import * as fmt from './format.js';

const HEIGHT = 200;
const M = {top: 12, right: 12, bottom: 26, left: 52};

const drawers = new WeakMap();
const widths = new WeakMap();
const resizer = new ResizeObserver((entries) => {
  for (const e of entries) {
    const w = Math.round(e.contentRect.width);
    if (w > 0 && w !== widths.get(e.target) && drawers.has(e.target)) drawers.get(e.target)();
  }
});

function mount(el, draw) {
  const run = () => {
    const w = Math.max(240, Math.round(el.clientWidth || 0));
    widths.set(el, Math.round(el.clientWidth || 0));
    draw(w);
  };
  drawers.set(el, run);
  resizer.observe(el);
  run();
}

/** Round tick values from 0 to at least max. */
export function ticks(max, count = 4, integer = false) {
  if (!(max > 0)) max = integer ? count : 1;
  let step = max / count;
  const mag = 10 ** Math.floor(Math.log10(step));
  const norm = step / mag;
  step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  if (integer) step = Math.max(1, Math.ceil(step));
  const out = [];
  for (let v = 0; v < max + step; v += step) {
    out.push(Number(v.toPrecision(12)));
    if (v >= max) break;
  }
  return out;
}

function yAxis(g, yTicks, y, width, label) {
  for (const v of yTicks) {
    const py = y(v);
    g.append(
      s('line', {class: 'grid', x1: M.left, x2: width - M.right, y1: py, y2: py}),
      s('text', {class: 'tick', x: M.left - 6, y: py, 'text-anchor': 'end', 'dominant-baseline': 'middle'}, label(v)),
    );
  }
}

function xLabels(g, buckets, x, band, width, bucketMs) {
  const every = Math.max(1, Math.ceil(buckets.length / Math.max(1, Math.floor((width - M.left - M.right) / 64))));
  buckets.forEach((b, i) => {
    if (i % every !== 0) return;
    g.append(s('text', {class: 'tick', x: x(i) + band / 2, y: HEIGHT - 8, 'text-anchor': 'middle'},
      fmt.axisTime(b.start, bucketMs)));
  });
}

function empty(el, message) {
  fill(el, h('p', {class: 'chart-empty'}, message));
}

// A hover readout: one invisible column per bucket; moving over it (or
// focusing the chart and using the arrow keys) shows that bucket's values.
function hover(el, svg, buckets, x, band, lines) {
  const tip = h('div', {class: 'chart-tip', role: 'status', hidden: true});
  const marker = s('line', {class: 'hover-line', y1: M.top, y2: HEIGHT - M.bottom, visibility: 'hidden'});
  svg.append(marker);
  let current = -1;
  const show = (i) => {
    if (i < 0 || i >= buckets.length) return;
    current = i;
    const cx = x(i) + band / 2;
    marker.setAttribute('x1', cx);
    marker.setAttribute('x2', cx);
    marker.setAttribute('visibility', 'visible');
    fill(tip, h('strong', null, fmt.dateTime(buckets[i].start).slice(0, 16)), ...lines(buckets[i]).map((l) => h('div', null, l)));
    tip.hidden = false;
    const w = el.clientWidth;
    tip.style.left = `${Math.min(Math.max(cx + 10, 0), Math.max(0, w - 170))}px`;
    tip.style.top = `${M.top}px`;
  };
  const hide = () => {
    current = -1;
    tip.hidden = true;
    marker.setAttribute('visibility', 'hidden');
  };
  const hit = s('rect', {class: 'hit', x: M.left, y: M.top, width: Math.max(0, x(buckets.length) - M.left), height: HEIGHT - M.top - M.bottom});
  hit.addEventListener('pointermove', (e) => {
    const r = svg.getBoundingClientRect();
    show(Math.floor((e.clientX - r.left - M.left) / ((x(buckets.length) - M.left) / buckets.length)));
  });
  hit.addEventListener('pointerleave', hide);
  svg.setAttribute('tabindex', '0');
  svg.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowRight') show(Math.min(buckets.length - 1, current + 1));
    else if (e.key === 'ArrowLeft') show(Math.max(0, current < 0 ? buckets.length - 1 : current - 1));
    else if (e.key === 'Escape') hide();
    else return;
    e.preventDefault();
  });
  svg.addEventListener('blur', hide);
  svg.append(hit);
  el.append(tip);
}

/** Stacked columns: requests that succeeded and errors, per bucket. */
export function requestsChart(el, series) {
  const buckets = series.buckets || [];
  const bucketMs = fmt.durationMs(series.bucket);
  const total = buckets.reduce((a, b) => a + (b.requests || 0), 0);
  const errors = buckets.reduce((a, b) => a + (b.errors || 0), 0);
  el.dataset.total = String(total);
  el.dataset.errors = String(errors);
  el.dataset.buckets = String(buckets.length);
  if (!buckets.length) return empty(el, 'No data for this window.');
  mount(el, (width) => {
    const yTicks = ticks(Math.max(...buckets.map((b) => b.requests || 0)), 4, true);
    const top = yTicks[yTicks.length - 1];
    const plotW = width - M.left - M.right;
    const band = plotW / buckets.length;
    const x = (i) => M.left + i * band;
    const y = (v) => M.top + (HEIGHT - M.top - M.bottom) * (1 - v / top);
    const gap = band > 6 ? Math.min(4, band * 0.2) : 0;
    const svg = s('svg', {width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img',
      'aria-label': `Requests per ${series.bucket} bucket: ${total} in total, ${errors} errors.`});
    const g = s('g');
    yAxis(g, yTicks, y, width, (v) => fmt.compact(v));
    buckets.forEach((b, i) => {
      const ok = Math.max(0, (b.requests || 0) - (b.errors || 0));
      const err = b.errors || 0;
      if (ok > 0) g.append(s('rect', {class: 'bar bar-ok', x: x(i) + gap / 2, width: Math.max(1, band - gap), y: y(ok), height: y(0) - y(ok)}));
      if (err > 0) g.append(s('rect', {class: 'bar bar-err', x: x(i) + gap / 2, width: Math.max(1, band - gap), y: y(ok + err), height: y(ok) - y(ok + err)}));
    });
    xLabels(g, buckets, x, band, width, bucketMs);
    g.append(s('line', {class: 'axis', x1: M.left, x2: width - M.right, y1: y(0), y2: y(0)}));
    svg.append(g);
    fill(el, svg);
    hover(el, svg, buckets, x, band, (b) => [`${fmt.int(b.requests)} requests`, `${fmt.int(b.errors)} errors`,
      `${fmt.compact(b.tokens)} tokens`, fmt.usd(b.cost_micros)]);
  });
}

/** Lines: latency p50 and p95 per bucket (buckets without requests are gaps). */
export function latencyChart(el, series) {
  const buckets = series.buckets || [];
  const lat = (b) => b.latency_ms || {};
  const has = (b) => (b.requests || 0) > 0 && fmt.isNum(lat(b).p95);
  el.dataset.buckets = String(buckets.length);
  if (!buckets.some(has)) return empty(el, 'No requests in this window.');
  const bucketMs = fmt.durationMs(series.bucket);
  mount(el, (width) => {
    const max = Math.max(...buckets.filter(has).map((b) => Math.max(lat(b).p95 || 0, lat(b).p50 || 0)));
    const yTicks = ticks(max, 4);
    const top = yTicks[yTicks.length - 1];
    const plotW = width - M.left - M.right;
    const band = plotW / buckets.length;
    const x = (i) => M.left + i * band;
    const y = (v) => M.top + (HEIGHT - M.top - M.bottom) * (1 - v / top);
    const svg = s('svg', {width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img',
      'aria-label': `Latency p50 and p95 per ${series.bucket} bucket; highest p95 ${fmt.ms(max)}.`});
    const g = s('g');
    yAxis(g, yTicks, y, width, fmt.axisMs);
    for (const [key, cls] of [['p50', 'line-p50'], ['p95', 'line-p95']]) {
      let d = '';
      let pen = false;
      buckets.forEach((b, i) => {
        if (!has(b) || !fmt.isNum(lat(b)[key])) {
          pen = false;
          return;
        }
        d += `${pen ? 'L' : 'M'}${(x(i) + band / 2).toFixed(1)},${y(lat(b)[key]).toFixed(1)}`;
        pen = true;
        g.append(s('circle', {class: `dot ${cls}`, cx: x(i) + band / 2, cy: y(lat(b)[key]), r: band > 8 ? 2.5 : 1.5}));
      });
      if (d) g.append(s('path', {class: `line ${cls}`, d}));
    }
    xLabels(g, buckets, x, band, width, bucketMs);
    g.append(s('line', {class: 'axis', x1: M.left, x2: width - M.right, y1: y(0), y2: y(0)}));
    svg.append(g);
    fill(el, svg);
    hover(el, svg, buckets, x, band, (b) => has(b)
      ? [`p50 ${fmt.ms(lat(b).p50)}`, `p95 ${fmt.ms(lat(b).p95)}`, `${fmt.int(b.requests)} requests`]
      : ['no requests']);
  });
}

/** Horizontal bars: cost per model (the summary's by_model). */
export function costChart(el, byModel) {
  const rows = (byModel || []).map((m) => ({model: m.model || '(none)', cost: m.cost_micros || 0, requests: m.requests || 0}))
    .sort((a, b) => b.cost - a.cost || b.requests - a.requests);
  el.dataset.models = String(rows.length);
  el.dataset.total = String(rows.reduce((a, r) => a + r.cost, 0));
  if (!rows.length) return empty(el, 'No requests in this window.');
  const max = Math.max(...rows.map((r) => r.cost));
  const list = h('ol', {class: 'hbars', role: 'list'});
  for (const r of rows.slice(0, 12)) {
    const bar = h('span', {class: 'hbar-fill'});
    bar.style.width = max > 0 ? `${Math.max(r.cost > 0 ? 1 : 0, (r.cost / max) * 100)}%` : '0%';
    list.append(h('li', {class: 'hbar', 'data-model': r.model},
      h('span', {class: 'hbar-label', title: r.model}, r.model),
      h('span', {class: 'hbar-track'}, bar),
      h('span', {class: 'hbar-value'}, fmt.usd(r.cost), h('small', null, ` · ${fmt.int(r.requests)} req`))));
  }
  const parts = [list];
  if (rows.length > 12) parts.push(h('p', {class: 'muted small'}, `and ${rows.length - 12} more models`));
  if (max === 0) parts.push(h('p', {class: 'muted small'}, 'No cost recorded: these models have no price in the catalog.'));
  drawers.delete(el);
  fill(el, ...parts);
}
