// Every page of the console: the hash path, the module that renders it, who may open it,
// and its place in the navigation. A page module exports `default async function
// (main, params, ctx)`; ctx has the signed-in `user`.

/** The list and detail pages of one CRM entity kind (one module serves the four). */
function entityPage(kind) {
  return () => import('./pages/entities.js').then((m) => ({ default: m.page(kind) }));
}

export const routes = [
  // -- work (every employee) -----------------------------------------------------------
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
