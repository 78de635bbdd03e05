// The page: asks for a token, learns its role, then shows the fleet
// (`#/`) or one device (`#/devices/ID`), each view taking the main
// element until the route changes.

import { ApiError, forgetToken, get, setToken, token } from './api.js';
import { fleet } from './fleet.js';
import { device } from './device.js';
import { el, failure } from './view.js';

const main = document.getElementById('main');
const who = document.getElementById('whoami');
const signOut = document.getElementById('sign-out');

// The view in place: aborting it stops its requests and its stream.
let current = null;

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
