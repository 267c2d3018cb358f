// The audit log, newest first: who changed what, from where, with which answer.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { listView } from '../lib/list.js';
import { pageHeader } from '../lib/ui.js';
import { all, when } from './admin-kit.js';

export default async function auditPage(page) {
  const people = await all('/users');
  const person = Object.fromEntries(people.map((p) => [p.id, p.name]));
  const actor = (a) => {
    if (a.startsWith('user:')) return person[a.slice(5)] || a;
    if (a === 'bootstrap') return t('audit.bootstrap');
    return a;
  };
  const list = listView({
    resource: 'audit',
    caption: 'audit.title',
    columns: [
      { label: 'audit.at', render: (e) => h('span', { class: 'nowrap' }, when(e.at)) },
      { label: 'audit.actor', render: (e) => actor(e.actor) },
      { label: 'audit.action', render: (e) => h('span', { class: 'mono' }, e.action) },
      { label: 'audit.object', render: (e) => e.object || '—' },
      { label: 'audit.fields', render: (e) => e.fields.join(', ') || '—' },
      { label: 'audit.status', render: (e) => String(e.status) },
      { label: 'audit.address', render: (e) => e.remote_addr || '—' },
    ],
    filters: [{ name: 'object', label: 'audit.object', type: 'text' }],
    load: (query) => api.get('/audit', query),
  });
  mount(page, pageHeader('audit.title'), list);
}
