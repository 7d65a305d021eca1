// Entry point: sign-in, routing (#/ and #/traces/{id}) and sign-out.

import {getKey, setKey, clearKey, isAdminKey, onUnauthorized, setTenantScope, getJSON} from './api.js';
import {$} from './dom.js';
import * as overview from './overview.js';
import * as traces from './traces.js';
import * as trace from './trace.js';

// Tells the dashboard's other tabs of a log-out.
const signOuts = typeof BroadcastChannel === 'function' ? new BroadcastChannel('loom.dashboard') : null;

let started = false;
let listScroll = 0;

function showLogin(message = '') {
  started = false;
  overview.stop();
  traces.clear();
  trace.close();
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#login-message').textContent = message;
  const input = $('#login-key');
  input.value = '';
  input.setAttribute('aria-invalid', message ? 'true' : 'false');
  input.focus();
  document.title = 'Sign in · Loom dashboard';
}

function maskKey(key) {
  if (isAdminKey(key)) return 'admin';
  return `${key.slice(0, 9)}…`;
}

function showApp() {
  const key = getKey();
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#identity').textContent = maskKey(key);
  $('#identity').title = isAdminKey(key) ? 'Signed in with the admin token' : 'Signed in with a tenant key';
  $('#tenant-scope').hidden = !isAdminKey(key);
  if (!started) {
    started = true;
    setTenantScope($('#tenant-input').value);
    overview.load();
    traces.reset();
  }
  route();
}

function route() {
  if (!started) return;
  const m = /^#\/traces\/(.+)$/.exec(location.hash);
  const dash = $('#dashboard-view');
  const view = $('#trace-view');
  if (m) {
    if (!dash.hidden) listScroll = window.scrollY;
    dash.hidden = true;
    view.hidden = false;
    window.scrollTo(0, 0);
    document.title = 'Trace · Loom dashboard';
    trace.show(decodeURIComponent(m[1]));
    $('#main').focus({preventScroll: true});
  } else {
    trace.close();
    view.hidden = true;
    view.replaceChildren();
    view.dataset.state = 'idle';
    const wasHidden = dash.hidden;
    dash.hidden = false;
    document.title = 'Loom dashboard';
    if (wasHidden) window.scrollTo(0, listScroll);
  }
}

async function signIn(e) {
  e.preventDefault();
  const input = $('#login-key');
  const key = input.value.trim();
  const msg = $('#login-message');
  if (!key) {
    msg.textContent = 'Enter an API key.';
    input.setAttribute('aria-invalid', 'true');
    return;
  }
  const button = $('[data-testid="login-submit"]');
  button.disabled = true;
  msg.textContent = '';
  setKey(key);
  try {
    // Check the key before showing anything.
    await getJSON('traces', {limit: 1});
    input.value = '';
    showApp();
  } catch (err) {
    if (err.status !== 401) {
      clearKey();
      msg.textContent = `Could not sign in: ${err.message}`;
    }
    // a 401 has already shown the form with its message
  } finally {
    button.disabled = false;
  }
}

function init() {
  onUnauthorized((message) => showLogin(message || 'Please sign in.'));
  $('#login-form').addEventListener('submit', signIn);
  $('#logout').addEventListener('click', () => {
    clearKey();
    if (signOuts) signOuts.postMessage('signed-out');
    history.replaceState(null, '', location.pathname + location.search);
    showLogin('');
  });
  let scopeTimer = 0;
  $('#tenant-input').addEventListener('input', () => {
    clearTimeout(scopeTimer);
    scopeTimer = setTimeout(() => {
      setTenantScope($('#tenant-input').value);
      overview.load();
      traces.reset();
      traces.restartLive();
    }, 400);
  });
  overview.init({models: (names) => traces.suggest('models-list', names)});
  traces.init();
  window.addEventListener('hashchange', route);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && location.hash.startsWith('#/traces/') && !e.target.closest('input, select, textarea, svg')) {
      location.hash = '#/';
    }
  });
  // Each tab signs in on its own (the key is in sessionStorage, see
  // api.js); logging out in one tab logs out the others.
  if (signOuts) {
    signOuts.addEventListener('message', (e) => {
      if (e.data !== 'signed-out' || !getKey()) return;
      clearKey();
      showLogin('Signed out in another tab.');
    });
  }
  if (getKey()) showApp();
  else showLogin('');
}

init();
