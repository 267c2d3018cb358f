// Sources: where a lead came from (built-in CALL, EMAIL, WEB, OTHER and custom ones).

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { pageHeader, notify, section, badge } from '../lib/ui.js';
import { deleteButton, table } from './admin-kit.js';

export default async function sourcesPage(page) {
  const box = h('div');
  async function load() {
    const { items } = await api.get('/sources');
    mount(box, table([
      { label: 'sources.code', render: (s) => h('span', { class: 'mono' }, s.code) },
      { label: 'common.name', render: (s) => s.name },
      { label: 'tokens.actions', render: (s) => (s.builtin ? badge(t('sources.builtin'), 'muted') : deleteButton({ path: `/sources/${encodeURIComponent(s.code)}`, confirmKey: 'sources.confirm_delete', vars: { name: s.name }, small: true, done: load })) },
    ], items, { caption: 'sources.title' }));
  }
  const create = form({
    resource: 'sources',
    submit: 'sources.add',
    fields: [
      { name: 'code', label: 'sources.code', required: true, help: 'sources.code_help' },
      { name: 'name', label: 'common.name', required: true },
    ],
    onSubmit: async (values, el) => {
      await api.post('/sources', values);
      notify(t('common.saved'));
      el.reset();
      await load();
    },
  });
  await load();
  mount(page, pageHeader('sources.title'), box, section('sources.new', create));
}
