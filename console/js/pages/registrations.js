// Registered phones: who registered which device, over what, from where, since when and
// until when.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { listView } from '../lib/list.js';
import { pageHeader } from '../lib/ui.js';
import { all, when } from './admin-kit.js';

export default async function registrationsPage(page) {
  const [people, trunks] = await Promise.all([all('/users'), all('/trunks')]);
  const person = Object.fromEntries(people.map((p) => [p.id, p]));
  const trunk = Object.fromEntries(trunks.map((x) => [x.id, x]));
  const who = (r) => {
    if (r.user) {
      const p = person[r.user];
      return p ? h('a', { href: `#/users/${p.id}` }, p.name) : (r.user_name || r.user);
    }
    if (r.trunk) return trunk[r.trunk] ? h('a', { href: `#/trunks/${r.trunk}` }, trunk[r.trunk].name) : r.trunk;
    return '—';
  };
  const list = listView({
    resource: 'registrations',
    caption: 'registrations.title',
    columns: [
      { label: 'registrations.who', render: who },
      { label: 'registrations.aor', render: (r) => r.extension || r.aor },
      { label: 'registrations.device', render: (r) => r.user_agent || '—' },
      { label: 'registrations.transport', render: (r) => (r.transport || '').toUpperCase() },
      { label: 'registrations.address', render: (r) => h('span', { class: 'mono' }, r.source) },
      { label: 'registrations.since', render: (r) => when(r.registered_at || r.since) },
      { label: 'registrations.expires', render: (r) => [when(r.expires), h('span', { class: 'muted' }, ` (${t('registrations.in_s', { s: r.expires_in_s })})`)] },
    ],
    load: (query) => api.get('/registrations', query),
    empty: 'registrations.none',
  });
  const refresh = h('button', { type: 'button', class: 'btn', on: { click: () => list.reload() } }, t('trunks.refresh'));
  mount(page, pageHeader('registrations.title', refresh), h('p', { class: 'help' }, t('registrations.help')), list);
}
