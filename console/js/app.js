// The console's frame: who is signed in, the navigation, the page for the current hash,
// and the hooks that run once a person is signed in (the call window, their own presence).

import { h, mount } from './lib/dom.js';
import { t, lang, LANGUAGES, setLanguage } from './lib/i18n.js';
import { api, setCsrf, onUnauthorized } from './lib/api.js';
import { routes, match } from './routes.js';
import { loading } from './lib/ui.js';
import { signInPage } from './pages/signin.js';

const root = document.getElementById('app');
const ctx = { user: null };
/** Modules that start with the session (e.g. the call window) and stop with it. */
const sessionHooks = [
  () => import('./callwindow.js'),
  () => import('./pages/presence.js').then((m) => ({ start: (c) => m.myPresence(document.getElementById('my-presence'), c) })),
];
let started = [];

async function boot() {
  try {
    const session = await api.get('/session', null, { quiet: true });
    signedIn(session);
  } catch {
    showSignIn();
  }
}

function showSignIn() {
  stopSession();
  ctx.user = null;
  setCsrf(null);
  signInPage(root, signedIn);
  root.removeAttribute('aria-busy');
}

function signedIn(session) {
  ctx.user = session.user;
  setCsrf(session.csrf_token);
  layout();
  startSession();
  if (!location.hash || location.hash === '#/' || !match(location.hash)) {
    location.hash = '#/' + home();
  } else {
    route();
  }
}

function home() {
  const first = routes.find((r) => r.nav && (!r.admin || ctx.user.role === 'admin'));
  return first ? first.path : '';
}

async function startSession() {
  for (const load of sessionHooks) {
    const module = await load();
    if (module && module.start) started.push(module.start(ctx));
  }
}

function stopSession() {
  for (const stop of started) if (typeof stop === 'function') stop();
  started = [];
}

const main = h('main', { id: 'main', tabindex: '-1' });
const nav = h('nav', { id: 'nav', 'aria-label': t('nav.label') });

function layout() {
  const isAdmin = ctx.user.role === 'admin';
  const groups = [['work', 'nav.group_work'], ['admin', 'nav.group_admin']];
  mount(nav, groups.map(([group, label]) => {
    const items = routes.filter((r) => r.nav && r.group === group && (!r.admin || isAdmin));
    if (!items.length) return null;
    return h('div', { class: 'nav-group' },
      h('h2', { class: 'nav-heading' }, t(label)),
      h('ul', {}, items.map((r) => h('li', {}, h('a', { href: '#/' + r.path, dataset: { path: r.path } }, t(r.nav))))));
  }));
  const langSelect = h('select', { id: 'lang', on: { change: (e) => setLanguage(e.target.value) } },
    LANGUAGES.map((l) => h('option', { value: l, selected: l === lang }, t('lang.' + l))));
  const header = h('header', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/' + home() }, t('app.name')),
    h('div', { class: 'who' },
      h('span', { class: 'who-name' }, ctx.user.name, ' · ', t('role.' + ctx.user.role)),
      h('div', { id: 'my-presence', class: 'who-presence' }),
      h('label', { for: 'lang', class: 'sr-only' }, t('lang.label')),
      langSelect,
      h('button', { id: 'signout', type: 'button', class: 'btn', on: { click: signOut } }, t('signin.signout'))));
  const callWindow = h('aside', {
    id: 'call-window', class: 'call-window', 'aria-live': 'assertive', 'aria-label': t('calls.window'),
  });
  mount(root, header, h('div', { class: 'frame' }, nav, main), callWindow);
  root.removeAttribute('aria-busy');
}

async function signOut() {
  try { await api.del('/session'); } catch { /* the session may already be gone */ }
  location.hash = '';
  showSignIn();
}

let routing = 0;
async function route() {
  if (!ctx.user) return;
  const found = match(location.hash);
  if (!found) { location.hash = '#/' + home(); return; }
  const { route: r, params } = found;
  nav.querySelectorAll('a').forEach((a) => {
    const current = location.hash.replace(/^#\//, '').split(/[/?]/)[0] === a.dataset.path;
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  });
  if (r.admin && ctx.user.role !== 'admin') {
    mount(main, h('p', { class: 'form-error', role: 'alert' }, t('common.admin_only')));
    return;
  }
  const token = ++routing;
  mount(main, loading());
  try {
    const module = await r.page();
    if (token !== routing) return;
    const page = h('div', { class: 'page' });
    await module.default(page, params, ctx);
    if (token !== routing) return;
    mount(main, page);
    const title = main.querySelector('h1');
    (title || main).focus({ preventScroll: true });
  } catch (err) {
    if (token !== routing) return;
    mount(main, h('p', { class: 'form-error', role: 'alert' }, err.message || String(err)));
  }
}

onUnauthorized(() => { if (ctx.user) showSignIn(); });
window.addEventListener('hashchange', route);
boot();
