// The page: asks for a token, learns its role, then shows the fleet
// (`#/`) or one device (`#/devices/ID`), each view taking the main
// element until the route changes.

import { ApiError, forgetToken, get, setToken, token } from './api.js';
import { fleet } from './fleet.js';
import { device } from './device.js';

const main = document.getElementById('main');
const who = document.getElementById('whoami');
const signOut = document.getElementById('sign-out');

// The view in place: aborting it stops its requests and its stream.
let current = null;

/** Elements, briefly: `el('td', {class: 'x'}, 'text', child)`. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) e.append(c);
  }
  return e;
}

/** A Unix ms time as people read it: relative, with the exact time as a title. */
export function when(ms) {
  if (ms === null || ms === undefined) return el('span', { class: 'muted' }, 'never');
  const s = Math.round((Date.now() - ms) / 1000);
  const ago =
    Math.abs(s) < 60 ? `${s} s` : Math.abs(s) < 3600 ? `${Math.round(s / 60)} min` : Math.abs(s) < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
  return el('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() }, s >= 0 ? `${ago} ago` : `in ${ago}`);
}

/** The device id as the API writes it: decimal, with its hex as a title. */
export function deviceId(id) {
  return el('code', { title: `0x${BigInt(id).toString(16)}` }, String(id));
}

/** A message in place of a view, for what went wrong. */
export function failure(e) {
  return el('p', { class: 'error', role: 'alert' }, e instanceof ApiError ? `${e.status}: ${e.message}` : String(e.message || e));
}

function login(reason) {
  who.textContent = '';
  signOut.hidden = true;
  const input = el('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, size: 40 });
  const form = el(
    'form',
    { class: 'login', onsubmit: (ev) => {
      ev.preventDefault();
      setToken(input.value.trim());
      route();
    } },
    el('h1', {}, 'telemark'),
    el('label', { for: 'token' }, 'API token'),
    input,
    el('button', { type: 'submit' }, 'Open'),
    el('p', { class: 'muted' }, 'A token from telemark-cloud: the admin token, or one made with POST /v1/tokens. It stays in this tab only.'),
    reason ? el('p', { class: 'error', role: 'alert' }, reason) : null,
  );
  main.replaceChildren(form);
  input.focus();
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  if (!token()) return login();
  let caller;
  try {
    caller = await get('/v1/whoami', signal);
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      forgetToken();
      return login(`That token was refused: ${e.message}`);
    }
    main.replaceChildren(failure(e));
    return;
  }
  who.textContent = caller.scope === null ? caller.role : `${caller.role}, group ${caller.scope}`;
  who.dataset.role = caller.role;
  signOut.hidden = false;
  const path = location.hash.replace(/^#/, '') || '/';
  const match = path.match(/^\/devices\/(\d+)$/);
  const view = match ? device(match[1], caller, signal) : fleet(caller, signal);
  main.replaceChildren(view);
}

signOut.addEventListener('click', () => {
  forgetToken();
  route();
});
window.addEventListener('hashchange', route);
route();
