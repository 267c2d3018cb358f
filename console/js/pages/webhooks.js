// Webhooks: receivers of call and record events, their last delivery or error; the secret
// shown once.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section } from '../lib/ui.js';
import { all, deleteButton, shownOnce, when } from './admin-kit.js';

// Call events are chosen by default, as before record events existed. `email.ingested` is
// accepted by the API but not offered: nothing sends it yet.
const EVENTS = ['call.ringing', 'call.answered', 'call.ended',
  'lead.created', 'contact.created', 'deal.created', 'entity.updated', 'activity.created'];

export default async function webhooksPage(page) {
  const people = await all('/users');
  const person = Object.fromEntries(people.map((p) => [p.id, p.name]));
  const list = listView({
    resource: 'webhooks',
    caption: 'webhooks.title',
    columns: [
      { label: 'webhooks.url', render: (w) => h('span', { class: 'mono' }, w.url) },
      { label: 'webhooks.events', render: (w) => w.events.join(', ') },
      { label: 'webhooks.owner', render: (w) => (w.owner ? person[w.owner] || w.owner : t('webhooks.bootstrap')) },
      { label: 'webhooks.last_delivery', render: (w) => when(w.last_delivery_at) },
      { label: 'webhooks.last_error', render: (w) => (w.last_error ? `${w.last_error} (${when(w.last_error_at)})` : '—') },
      { label: 'tokens.actions', render: (w) => deleteButton({ path: `/webhooks/${encodeURIComponent(w.id)}`, confirmKey: 'webhooks.confirm_delete', vars: { url: w.url }, small: true, done: () => list.reload() }) },
    ],
    load: (query) => api.get('/webhooks', query),
  });
  const secretBox = h('div');
  const events = h('fieldset', { class: 'checks', dataset: { field: 'events' } },
    h('legend', {}, t('webhooks.events')),
    EVENTS.map((e) => {
      const id = 'wh-' + e.replace('.', '-');
      return h('div', { class: 'field-check' }, h('input', { type: 'checkbox', id, name: 'events', value: e, checked: e.startsWith('call.') }), h('label', { for: id }, e));
    }),
    h('p', { class: 'field-error', dataset: { for: 'events' }, hidden: true }));
  const create = form({
    resource: 'webhooks',
    submit: 'webhooks.add',
    fields: [
      { name: 'url', type: 'url', label: 'webhooks.url', required: true, placeholder: 'https://' },
      { name: 'secret', type: 'password', label: 'webhooks.secret', help: 'webhooks.secret_help', autocomplete: 'off' },
    ],
    extra: events,
    onSubmit: async (values, el) => {
      const chosen = [...events.querySelectorAll('input:checked')].map((i) => i.value);
      const answer = await api.post('/webhooks', { ...values, events: chosen });
      el.reset();
      mount(secretBox, shownOnce(answer.secret, 'webhooks.secret_once'));
      secretBox.querySelector('input').focus();
      notify(t('common.saved'));
      list.reload();
    },
  });
  mount(page, pageHeader('webhooks.title'), h('p', { class: 'help' }, t('webhooks.help')), list, section('webhooks.new', create, secretBox));
}
