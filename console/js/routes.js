// Every page of the console: the hash path, the module that renders it, who may open it,
// and its place in the navigation. A page module exports `default async function
// (main, params, ctx)`; ctx has the signed-in `user`.

/** The list and detail pages of one CRM entity kind (one module serves the four). */
function entityPage(kind) {
  return () => import('./pages/entities.js').then((m) => ({ default: m.page(kind) }));
}

export const routes = [
  // -- work (every employee) -----------------------------------------------------------
  { path: 'dashboard', page: () => import('./pages/dashboard.js'), nav: 'nav.dashboard', group: 'work' },
  { path: 'work', page: () => import('./pages/work.js'), nav: 'nav.work', group: 'work' },
  { path: 'leads', page: entityPage('lead'), nav: 'nav.leads', group: 'work' },
  { path: 'leads/:id', page: entityPage('lead') },
  { path: 'contacts', page: entityPage('contact'), nav: 'nav.contacts', group: 'work' },
  { path: 'contacts/:id', page: entityPage('contact') },
  { path: 'companies', page: entityPage('company'), nav: 'nav.companies', group: 'work' },
  { path: 'companies/:id', page: entityPage('company') },
  { path: 'deals', page: entityPage('deal'), nav: 'nav.deals', group: 'work' },
  { path: 'deals/:id', page: entityPage('deal') },
  { path: 'calls', page: () => import('./pages/calls.js'), nav: 'nav.calls', group: 'work' },
  // -- administration (admins) ---------------------------------------------------------
  { path: 'users', page: () => import('./pages/users.js'), admin: true, nav: 'nav.users', group: 'admin' },
  { path: 'users/:id', page: () => import('./pages/users.js'), admin: true },
  { path: 'queues', page: () => import('./pages/queues.js'), admin: true, nav: 'nav.queues', group: 'admin' },
  { path: 'queues/:id', page: () => import('./pages/queues.js'), admin: true },
  { path: 'presence', page: () => import('./pages/presence.js'), admin: true, nav: 'nav.presence', group: 'admin' },
  { path: 'numbers', page: () => import('./pages/numbers.js'), admin: true, nav: 'nav.numbers', group: 'admin' },
  { path: 'numbers/:id', page: () => import('./pages/numbers.js'), admin: true },
  { path: 'trunks', page: () => import('./pages/trunks.js'), admin: true, nav: 'nav.trunks', group: 'admin' },
  { path: 'trunks/:id', page: () => import('./pages/trunks.js'), admin: true },
  { path: 'registrations', page: () => import('./pages/registrations.js'), admin: true, nav: 'nav.registrations', group: 'admin' },
  { path: 'mailboxes', page: () => import('./pages/mailboxes.js'), admin: true, nav: 'nav.mailboxes', group: 'admin' },
  { path: 'mailboxes/:id', page: () => import('./pages/mailboxes.js'), admin: true },
  { path: 'settings', page: () => import('./pages/settings.js'), admin: true, nav: 'nav.settings', group: 'admin' },
  { path: 'exceptions', page: () => import('./pages/exceptions.js'), admin: true, nav: 'nav.exceptions', group: 'admin' },
  { path: 'sources', page: () => import('./pages/sources.js'), admin: true, nav: 'nav.sources', group: 'admin' },
  { path: 'pipelines', page: () => import('./pages/pipelines.js'), admin: true, nav: 'nav.pipelines', group: 'admin' },
  { path: 'webhooks', page: () => import('./pages/webhooks.js'), admin: true, nav: 'nav.webhooks', group: 'admin' },
  { path: 'audit', page: () => import('./pages/audit.js'), admin: true, nav: 'nav.audit', group: 'admin' },
];

/** The route and its parameters for a hash like "#/users/0193…". */
export function match(hash) {
  const parts = hash.replace(/^#\/?/, '').split('?')[0].split('/').filter(Boolean);
  for (const route of routes) {
    const pattern = route.path.split('/');
    if (pattern.length !== parts.length) continue;
    const params = {};
    const ok = pattern.every((p, i) => {
      if (p.startsWith(':')) { params[p.slice(1)] = decodeURIComponent(parts[i]); return true; }
      return p === parts[i];
    });
    if (ok) return { route, params };
  }
  return null;
}

/** The query of the hash ("#/calls?missed=true") as an object. */
export function hashQuery() {
  const q = location.hash.split('?')[1] || '';
  return Object.fromEntries(new URLSearchParams(q));
}
