// The dashboard API client (see core/dashboard/API.md). Every call sends the
// stored key as a bearer token; a 401 forgets the key and signs out.

// The key — a tenant key or the admin token — lives in sessionStorage: it
// survives a reload of the tab, but is never written to the browser
// profile's persistent storage, is not shared with other tabs, and is gone
// when the tab (or the browser) closes. Versions before this one kept it in
// localStorage, where it outlived the session on disk; any such value is
// deleted, not reused.
const KEY_STORAGE = 'loom.dashboard.key';

try {
  localStorage.removeItem(KEY_STORAGE);
} catch {
  // storage disabled: nothing was left there
}

// Relative to the page, so a path prefix in front of Loom keeps working:
// /dashboard/ → /api/v1/.
const BASE = new URL('../api/v1/', document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

// Without sessionStorage (disabled by the browser), the key is kept in
// memory only: signing in works until the page is reloaded.
let memoryKey = '';

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || memoryKey;
  } catch {
    return memoryKey;
  }
}

export function setKey(key) {
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    memoryKey = key;
  }
}

export function clearKey() {
  memoryKey = '';
  for (const storage of ['sessionStorage', 'localStorage']) {
    try {
      window[storage].removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: nothing to clear
    }
  }
}

/** A tenant key starts with loom_; anything else is taken for the admin token. */
export function isAdminKey(key = getKey()) {
  return key !== '' && !key.startsWith('loom_');
}

let unauthorized = () => {};

/** fn(message) runs when the API answers 401 (after the key is cleared). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

// The admin's tenant scope (?tenant=NAME on every call); empty = all tenants.
let tenant = '';

export function setTenantScope(name) {
  tenant = isAdminKey() ? name.trim() : '';
}

export function url(path, params = {}) {
  const u = new URL(path, BASE);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, String(v));
  }
  if (tenant) u.searchParams.set('tenant', tenant);
  return u;
}

async function request(path, params, signal, accept) {
  const key = getKey();
  if (!key) throw new ApiError(401, 'invalid_api_key', 'Not signed in.');
  let resp;
  try {
    resp = await fetch(url(path, params), {
      headers: {Authorization: `Bearer ${key}`, Accept: accept},
      signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', `Loom is not reachable (${err.message}).`);
  }
  if (resp.ok) return resp;
  let code = '', message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || body.error.type || '';
      message = body.error.message || message;
    }
  } catch {
    // not the error envelope
  }
  if (resp.status === 401) {
    // Only sign out if the key that failed is still the current one.
    if (getKey() === key) {
      clearKey();
      unauthorized(`The key was refused: ${message}`);
    }
  }
  throw new ApiError(resp.status, code, message);
}

/** GET a JSON endpoint. */
export async function getJSON(path, params = {}, {signal} = {}) {
  const resp = await request(path, params, signal, 'application/json');
  return resp.json();
}

/**
 * Follows GET /traces/live (Server-Sent Events) with fetch and a stream
 * reader, because EventSource cannot send the Authorization header. Calls
 * onTrace(summary) for each event; resolves when the stream ends, rejects on
 * errors; abort the signal to stop.
 */
export async function followLive(params, onTrace, {signal, onOpen} = {}) {
  const resp = await request('traces/live', params, signal, 'text/event-stream');
  if (onOpen) onOpen();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let data = [];
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) {
            const text = data.join('\n');
            data = [];
            let trace;
            try {
              trace = JSON.parse(text);
            } catch {
              continue; // not a trace: skip it
            }
            onTrace(trace);
          }
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
        }
        // comments (": keep-alive"), event:, id: and retry: lines are ignored
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
