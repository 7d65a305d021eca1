// One trace: metadata, tokens and cost, a timing waterfall, the conversation
// (request messages, then the answer) and the raw request and response.
// Prompts and answers are attacker-controlled text: they only ever become
// text nodes.

import {getJSON} from './api.js';
import {$, h, fill} from './dom.js';
import * as fmt from './format.js';

let controller = null;

export function close() {
  if (controller) controller.abort();
  controller = null;
}

export async function show(id) {
  close();
  const view = $('#trace-view');
  const ctl = new AbortController();
  controller = ctl;
  view.dataset.state = 'loading';
  view.dataset.id = id;
  fill(view, backLink(), h('p', {class: 'muted'}, 'Loading trace…'));
  try {
    const t = await getJSON(`traces/${encodeURIComponent(id)}`, {}, {signal: ctl.signal});
    if (controller !== ctl) return;
    fill(view, ...render(t));
    view.dataset.state = 'ready';
  } catch (err) {
    if (err.name === 'AbortError' || controller !== ctl) return;
    view.dataset.state = err.status === 404 ? 'notfound' : 'error';
    if (err.status === 401) return;
    fill(view, backLink(), h('h1', {id: 'trace-title'}, err.status === 404 ? 'Trace not found' : 'Could not load the trace'),
      h('p', {class: 'banner error', role: 'alert'}, err.status === 404
        ? 'There is no trace with this id in your scope.' : err.message));
  } finally {
    if (controller === ctl) controller = null;
  }
}

function backLink() {
  return h('nav', {class: 'crumbs'}, h('a', {href: '#/', class: 'back', 'data-testid': 'trace-back'}, '← All traces'));
}

function render(t) {
  const ok = t.status === 'ok';
  const out = [backLink()];
  out.push(h('header', {class: 'trace-head'},
    h('h1', {id: 'trace-title'}, t.model || '(no model)',
      h('span', {class: ['badge', ok ? 'badge-ok' : 'badge-err']}, t.status || '?', t.http_status ? ` ${t.http_status}` : null),
      t.stream ? h('span', {class: 'tag'}, 'stream') : null),
    h('p', {class: 'muted'}, fmt.dateTime(t.created_at), ' · ', t.endpoint || '', ' via ', t.provider || fmt.DASH,
      t.upstream_model && t.upstream_model !== t.model ? ` (as ${t.upstream_model})` : '')));

  if (t.error) out.push(h('p', {class: 'banner error', role: 'alert', 'data-testid': 'trace-error'}, h('strong', null, 'Error: '), t.error));
  if (t.readable === false) out.push(unreadableBanner(t));
  if (t.response_truncated || (t.message && t.message.x_loom && t.message.x_loom.response_truncated)) {
    out.push(h('p', {class: 'banner warn', 'data-testid': 'response-truncated'}, 'The recorded response was truncated at the trace size limit (trace.max_body_bytes).'));
  }
  if (t.request_truncated) {
    out.push(h('p', {class: 'banner warn', 'data-testid': 'request-truncated'}, 'The recorded request was truncated at the trace size limit (trace.max_body_bytes).'));
  }

  out.push(h('div', {class: 'trace-grid'},
    stats(t),
    waterfall(t)));
  out.push(conversation(t));
  out.push(raw(t));
  out.push(meta(t));
  return out;
}

// Why the bodies are not shown (the API's "unreadable"). A shred is an
// operator's decision; the other reasons mean the stored row is not what
// Loom wrote, and are shown as errors, never as a shred.
function unreadableBanner(t) {
  const reason = t.unreadable || 'unknown';
  const attrs = (cls) => ({class: ['banner', cls], 'data-testid': 'trace-unreadable', 'data-reason': reason,
    role: cls === 'error' ? 'alert' : null});
  switch (reason) {
    case 'shredded':
      return h('p', attrs('warn'),
        "This trace's bodies can no longer be read: the tenant's keys were shredded. Its metadata remains.");
    case 'failed_authentication':
      return h('p', attrs('error'), h('strong', null, 'Failed authentication — possibly tampered. '),
        "This trace's stored bodies do not authenticate under its tenant's key: they were altered, or moved " +
        'from another trace or tenant. The metadata below is as stored; run loom verify to check the hash chains.');
    case 'missing_key':
      return h('p', attrs('error'), h('strong', null, 'Missing key — possibly tampered. '),
        `This trace names data key version ${t.key_version}, which its tenant does not have. ` +
        'The metadata below is as stored; run loom verify to check the hash chains.');
    default:
      return h('p', attrs('error'), "This trace's bodies cannot be read.");
  }
}

function stat(label, value, testid, sub) {
  return h('div', {class: 'stat', 'data-testid': testid}, h('span', {class: 'stat-label'}, label),
    h('span', {class: 'stat-value'}, value), sub ? h('span', {class: 'stat-sub'}, sub) : null);
}

function stats(t) {
  const tk = t.tokens || {};
  return h('section', {class: 'panel stats', 'aria-label': 'Tokens and cost'},
    stat('Prompt tokens', fmt.int(tk.prompt), 'trace-tokens-prompt', fmt.isNum(tk.cached) && tk.cached ? `${fmt.int(tk.cached)} cached` : null),
    stat('Completion tokens', fmt.int(tk.completion), 'trace-tokens-completion'),
    stat('Total tokens', fmt.int(tk.total), 'trace-tokens-total', t.usage_source ? `usage: ${t.usage_source}` : null),
    stat('Cost', fmt.usd(t.cost_micros), 'trace-cost', t.pricing_note || (t.cost_micros === null || t.cost_micros === undefined ? 'model not priced' : (t.price_version ? `prices ${t.price_version}` : null))),
    stat('Latency', fmt.ms(t.latency_ms), 'trace-latency', fmt.isNum(t.ttfb_ms) ? `TTFB ${fmt.ms(t.ttfb_ms)}` : null));
}

function waterfall(t) {
  const total = fmt.isNum(t.latency_ms) ? t.latency_ms : 0;
  const upstream = fmt.isNum(t.upstream_ms) ? Math.min(t.upstream_ms, total) : 0;
  const overhead = fmt.isNum(t.overhead_ms) ? t.overhead_ms : Math.max(0, total - upstream);
  const scale = Math.max(total, upstream + overhead) || 1;
  const pctOf = (v) => `${Math.max(0, Math.min(100, (v / scale) * 100))}%`;

  const bar = h('div', {class: 'wf-bar', role: 'img',
    'aria-label': `Total ${fmt.ms(total)}: upstream ${fmt.ms(upstream)}, gateway overhead ${fmt.ms(overhead)}` +
      (fmt.isNum(t.ttfb_ms) ? `, first byte to the client at ${fmt.ms(t.ttfb_ms)}` : '')});
  const seg = (cls, v, label) => {
    const el = h('span', {class: ['wf-seg', cls], title: `${label}: ${fmt.ms(v)}`});
    el.style.width = pctOf(v);
    return el;
  };
  // The gateway's own time surrounds the upstream call; it is drawn as one
  // segment of its total because its split before/after is not recorded.
  bar.append(seg('wf-overhead', overhead, 'Gateway overhead'), seg('wf-upstream', upstream, 'Upstream'));
  if (fmt.isNum(t.ttfb_ms)) {
    const m = h('span', {class: 'wf-marker', title: `Client TTFB ${fmt.ms(t.ttfb_ms)}`, 'data-testid': 'waterfall-ttfb'});
    m.style.left = pctOf(t.ttfb_ms);
    bar.append(m);
  }
  const key = (cls, label, v) => h('li', null, h('i', {class: ['key', cls]}), `${label} `, h('strong', null, fmt.ms(v)));
  return h('section', {class: 'panel waterfall', 'data-testid': 'waterfall', 'aria-labelledby': 'wf-title'},
    h('h2', {id: 'wf-title'}, 'Timing'),
    bar,
    h('div', {class: 'wf-scale'}, h('span', null, '0'), h('span', null, fmt.ms(scale))),
    h('ul', {class: 'wf-legend'},
      key('wf-overhead', 'Gateway overhead', overhead),
      key('wf-upstream', 'Upstream', fmt.isNum(t.upstream_ms) ? t.upstream_ms : null),
      fmt.isNum(t.ttfb_ms) ? key('wf-ttfb', 'Client TTFB', t.ttfb_ms) : null,
      fmt.isNum(t.upstream_ttfb_ms) ? key('wf-uttfb', 'Upstream TTFB', t.upstream_ttfb_ms) : null,
      key('wf-total', 'Total', total)));
}

function json(v) {
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

function parseMaybe(v) {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

function shortURL(u) {
  const s = String(u ?? '');
  if (s.startsWith('data:')) return `${s.slice(0, s.indexOf(',') + 1 || 30)}… (${fmt.int(s.length)} characters)`;
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

function contentNodes(c) {
  if (c === null || c === undefined) return [];
  if (typeof c === 'string') return [h('div', {class: 'text'}, c)];
  if (!Array.isArray(c)) return [h('pre', {class: 'code'}, json(c))];
  return c.map((p) => {
    if (typeof p === 'string') return h('div', {class: 'text'}, p);
    switch (p && p.type) {
      case 'text':
      case 'input_text':
      case 'output_text':
        return h('div', {class: 'text'}, p.text ?? '');
      case 'refusal':
        return h('div', {class: 'text refusal'}, p.refusal ?? '');
      case 'image_url':
        return h('div', {class: 'part'}, h('span', {class: 'tag'}, 'image'), ' ', shortURL(p.image_url && (p.image_url.url ?? p.image_url)));
      case 'input_audio':
        return h('div', {class: 'part'}, h('span', {class: 'tag'}, 'audio'), ' ', (p.input_audio && p.input_audio.format) || '');
      case 'file':
        return h('div', {class: 'part'}, h('span', {class: 'tag'}, 'file'), ' ', (p.file && (p.file.filename || p.file.file_id)) || '');
      default:
        return h('pre', {class: 'code'}, json(p));
    }
  });
}

function toolCalls(calls) {
  return (calls || []).map((tc) => {
    const fn = tc.function || {};
    const args = parseMaybe(fn.arguments);
    return h('div', {class: 'tool-call', 'data-testid': 'tool-call'},
      h('div', {class: 'tool-call-head'}, h('span', {class: 'tag tag-tool'}, 'tool call'), ' ',
        h('code', null, fn.name || tc.type || 'call'), tc.id ? h('span', {class: 'muted small'}, ` ${tc.id}`) : null),
      args !== undefined && args !== '' ? h('pre', {class: 'code'}, json(args)) : null);
  });
}

function message(m, opts = {}) {
  const role = String(m.role || (opts.answer ? 'assistant' : 'message'));
  const roleClass = /^[a-z_]+$/.test(role) ? `msg-${role}` : 'msg-other';
  const head = h('header', {class: 'msg-head'}, h('span', {class: 'role'}, role),
    m.name ? h('span', {class: 'muted'}, ` ${m.name}`) : null,
    m.tool_call_id ? h('span', {class: 'muted small'}, ` result of ${m.tool_call_id}`) : null,
    opts.answer ? h('span', {class: 'tag tag-answer'}, opts.label || 'response') : null,
    opts.finish ? h('span', {class: 'muted small'}, ` finish: ${opts.finish}`) : null);
  const reasoning = m.reasoning_content || m.reasoning;
  return h('article', {class: ['msg', roleClass, opts.answer ? 'msg-answer' : null], 'data-role': role,
    'data-testid': opts.answer ? 'answer' : 'message'},
  head,
  typeof reasoning === 'string' && reasoning ? h('details', {class: 'reasoning'}, h('summary', null, 'Reasoning'), h('div', {class: 'text'}, reasoning)) : null,
  ...contentNodes(m.content),
  m.refusal ? h('div', {class: 'text refusal'}, String(m.refusal)) : null,
  ...toolCalls(m.tool_calls),
  m.function_call ? toolCalls([{type: 'function', function: m.function_call}]) : null,
  m.audio ? h('div', {class: 'part'}, h('span', {class: 'tag'}, 'audio'), ' ', m.audio.transcript || '') : null);
}

function answers(t) {
  const body = t.stream ? t.message : parseMaybe(t.response);
  if (!body || typeof body !== 'object') return [];
  if (body.error) {
    return [h('article', {class: 'msg msg-error msg-answer', 'data-testid': 'answer'},
      h('header', {class: 'msg-head'}, h('span', {class: 'role'}, 'error'), h('span', {class: 'tag tag-answer'}, 'response')),
      h('div', {class: 'text'}, body.error.message || json(body.error)))];
  }
  if (Array.isArray(body.choices)) {
    const many = body.choices.length > 1;
    return body.choices.map((c, i) => message(c.message || c.delta || {content: c.text ?? ''}, {
      answer: true, finish: c.finish_reason, label: many ? `choice ${c.index ?? i}` : 'response'}));
  }
  if (Array.isArray(body.data) && body.object === 'list') {
    const dims = body.data[0] && Array.isArray(body.data[0].embedding) ? body.data[0].embedding.length : null;
    return [h('article', {class: 'msg msg-assistant msg-answer', 'data-testid': 'answer'},
      h('header', {class: 'msg-head'}, h('span', {class: 'role'}, body.data[0]?.object || 'data'), h('span', {class: 'tag tag-answer'}, 'response')),
      h('div', {class: 'text'}, `${fmt.int(body.data.length)} item(s)${dims ? `, ${fmt.int(dims)} dimensions` : ''}`))];
  }
  return [];
}

function params(req) {
  if (!req || typeof req !== 'object' || Array.isArray(req)) return null;
  const skip = new Set(['messages', 'tools', 'input', 'functions']);
  const entries = Object.entries(req).filter(([k]) => !skip.has(k));
  if (!entries.length) return null;
  return h('dl', {class: 'params'}, entries.map(([k, v]) => [h('dt', null, k),
    h('dd', null, typeof v === 'object' ? JSON.stringify(v) : String(v))]));
}

function conversation(t) {
  const sec = h('section', {class: 'panel conversation', 'data-testid': 'conversation', 'aria-labelledby': 'conv-title'},
    h('h2', {id: 'conv-title'}, 'Conversation'));
  if (t.readable === false) {
    sec.append(h('p', {class: 'muted'}, 'Unavailable.'));
    return sec;
  }
  const req = parseMaybe(t.request);
  const p = params(req);
  if (p) sec.append(p);
  if (req && Array.isArray(req.tools) && req.tools.length) {
    sec.append(h('details', {class: 'tools'}, h('summary', null, `Tools offered (${req.tools.length})`),
      h('ul', null, req.tools.map((tool) => {
        const fn = tool.function || tool;
        return h('li', null, h('code', null, fn.name || tool.type || '?'), fn.description ? ` — ${fn.description}` : '');
      }))));
  }
  const list = h('div', {class: 'messages'});
  if (req && Array.isArray(req.messages)) list.append(...req.messages.map((m) => message(m || {})));
  else if (req && req.input !== undefined) list.append(message({role: 'input', content: Array.isArray(req.input) ? req.input.map(String) : req.input}));
  else if (typeof req === 'string') list.append(h('article', {class: 'msg msg-other', 'data-testid': 'message'}, h('header', {class: 'msg-head'}, h('span', {class: 'role'}, 'request (not JSON)')), h('div', {class: 'text'}, req)));
  list.append(...answers(t));
  if (!list.childElementCount) list.append(h('p', {class: 'muted'}, 'No messages recorded.'));
  sec.append(list);
  return sec;
}

function rawBlock(title, value, testid) {
  const text = json(value);
  const copy = h('button', {type: 'button', class: 'ghost small-button'}, 'Copy');
  copy.addEventListener('click', async (e) => {
    e.preventDefault();
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Copy failed';
    }
    setTimeout(() => (copy.textContent = 'Copy'), 1500);
  });
  return h('details', {class: 'raw', 'data-testid': testid},
    h('summary', null, title, h('span', {class: 'muted small'}, ` ${fmt.int(text.length)} characters`)),
    h('div', {class: 'raw-tools'}, copy),
    h('pre', {class: 'code'}, text));
}

function raw(t) {
  const sec = h('section', {class: 'panel', 'aria-labelledby': 'raw-title'}, h('h2', {id: 'raw-title'}, 'Raw'));
  if (t.request !== null && t.request !== undefined) sec.append(rawBlock('Request JSON', t.request, 'raw-request'));
  if (t.response !== null && t.response !== undefined) sec.append(rawBlock(t.stream && typeof t.response === 'string' ? 'Response (event stream)' : 'Response JSON', t.response, 'raw-response'));
  if (t.message !== null && t.message !== undefined) sec.append(rawBlock('Assembled message JSON', t.message, 'raw-message'));
  if (sec.childElementCount === 1) sec.append(h('p', {class: 'muted'}, 'No bodies.'));
  return sec;
}

function meta(t) {
  const row = (k, v) => (v === null || v === undefined || v === '' ? null : [h('dt', null, k), h('dd', null, String(v))]);
  return h('section', {class: 'panel', 'aria-labelledby': 'meta-title'}, h('h2', {id: 'meta-title'}, 'Details'),
    h('dl', {class: 'meta'},
      row('Trace ID', t.id), row('Request ID', t.request_id), row('Tenant', t.tenant), row('Endpoint', t.endpoint),
      row('Provider', t.provider), row('Plugin', t.plugin ? `${t.plugin.name || ''} ${t.plugin.version || ''}`.trim() : null),
      row('Requested model', t.model), row('Upstream model', t.upstream_model), row('Reported model', t.reported_model),
      row('Priced as', t.priced_model), row('HTTP status', t.http_status),
      row('Usage source', t.usage_source), row('Price version', t.price_version), row('Config hash', t.config_hash),
      row('Key version', t.key_version), row('Chain', t.chain ? `${t.chain.id} #${t.chain.seq}` : null),
      row('Chain hash', t.chain && t.chain.hash), row('Recorded', t.created_at)));
}
