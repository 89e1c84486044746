// The console: the sign-in form, then one page at a time by the URL's fragment
// (#overview, #spend, …). Pages render into #page and stop their timers when left.

import { ApiError, call, session, UNAUTHORIZED } from './api.js';
import * as cache from './cache.js';
import * as keys from './keys.js';
import * as models from './models.js';
import * as overview from './overview.js';
import * as requests from './requests.js';
import * as routes from './routes.js';
import * as spend from './spend.js';

const PAGES = { overview, spend, requests, keys, routes, cache, models };

const form = document.getElementById('login');
const keyInput = document.getElementById('login-key');
const loginError = document.getElementById('login-error');
const nav = document.getElementById('nav');
const page = document.getElementById('page');
let current = null;

function leave() {
  current?.stop?.();
  current = null;
  page.replaceChildren();
}

function showLogin(message = '') {
  leave();
  nav.hidden = true;
  page.hidden = true;
  form.hidden = false;
  loginError.textContent = message;
  keyInput.focus();
}

async function show() {
  if (!session.get()) {
    showLogin();
    return;
  }
  leave();
  form.hidden = true;
  nav.hidden = false;
  page.hidden = false;
  const name = location.hash.slice(1) || 'overview';
  const next = PAGES[name] ?? overview;
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.hash === `#${name}`);
  current = next;
  try {
    await next.render(page);
  } catch (e) {
    page.append(Object.assign(document.createElement('p'), { className: 'error', textContent: e.message }));
  }
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  loginError.textContent = '';
  try {
    // Any admin call checks the key; this one needs neither the ledger nor the cache.
    await call('/admin/routes', { key });
  } catch (e) {
    loginError.textContent = e instanceof ApiError && e.status === 401
      ? 'That is not the master key.'
      : e.message;
    return;
  }
  session.set(key);
  keyInput.value = '';
  await show();
});

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  showLogin();
});

window.addEventListener(UNAUTHORIZED, (event) => {
  session.clear();
  showLogin(`Signed out: ${event.detail}`);
});

window.addEventListener('hashchange', show);
show();
