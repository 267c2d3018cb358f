// Exceptions: phone numbers, addresses and domains never taken to the CRM.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section } from '../lib/ui.js';
import { deleteButton, when } from './admin-kit.js';

export default async function exceptionsPage(page) {
  const list = listView({
    resource: 'exceptions',
    caption: 'exceptions.title',
    columns: [
      { label: 'exceptions.value', render: (x) => x.value },
      { label: 'exceptions.kind', render: (x) => t('exceptions.kind.' + x.kind) },
      { label: 'exceptions.added', render: (x) => when(x.created_at) },
      { label: 'tokens.actions', render: (x) => deleteButton({ path: `/exceptions/${encodeURIComponent(x.id)}`, confirmKey: 'exceptions.confirm_delete', vars: { value: x.value }, small: true, done: () => list.reload() }) },
    ],
    load: (query) => api.get('/exceptions', query),
  });
  const create = form({
    resource: 'exceptions',
    submit: 'exceptions.add',
    fields: [{ name: 'value', label: 'exceptions.value', required: true, help: 'exceptions.value_help' }],
    onSubmit: async (values, el) => {
      await api.post('/exceptions', values);
      notify(t('exceptions.added_ok', { value: values.value }));
      el.reset();
      list.reload();
    },
  });
  mount(page, pageHeader('exceptions.title'), h('p', { class: 'help' }, t('exceptions.help')), list, section('exceptions.new', create));
}
