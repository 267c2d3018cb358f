// Settings: the CRM mode, what agents may see and change, and the forward address.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { pageHeader, notify, section } from '../lib/ui.js';
import { enumChoices } from './admin-kit.js';

export default async function settingsPage(page) {
  const [crm, access, pipelines, forward] = await Promise.all([
    api.get('/settings/crm'),
    api.get('/settings/access'),
    api.get('/pipelines'),
    api.get('/settings/forward').catch(() => null),
  ]);
  const crmForm = form({
    resource: 'settings-crm',
    fields: [
      { name: 'mode', type: 'select', label: 'settings.mode', value: crm.mode, options: enumChoices('settings.mode', ['classic', 'simple']), help: 'settings.mode_help' },
      { name: 'simple_creates', type: 'select', label: 'settings.simple_creates', value: crm.simple_creates, options: enumChoices('settings.simple_creates', ['contact', 'company']) },
      { name: 'deal_pipeline', type: 'select', label: 'settings.deal_pipeline', value: crm.deal_pipeline, empty: 'null',
        options: [{ value: '', label: 'settings.default_pipeline' }, ...pipelines.items.map((p) => ({ value: p.id, label: { text: p.name } }))] },
      { name: 'repeat_mode', type: 'checkbox', label: 'settings.repeat_mode', value: crm.repeat_mode, help: 'settings.repeat_mode_help' },
      { name: 'default_country', label: 'numbers.default_country', value: crm.default_country, help: 'settings.default_country_help' },
    ],
    onSubmit: async (values) => {
      await api.put('/settings/crm', values);
      notify(t('common.saved'));
    },
  });
  const levels = enumChoices('settings.level', ['own', 'queue', 'all']);
  const accessForm = form({
    resource: 'settings-access',
    fields: [
      { name: 'agent_view', type: 'select', label: 'settings.agent_view', value: access.agent_view, options: levels },
      { name: 'agent_edit', type: 'select', label: 'settings.agent_edit', value: access.agent_edit, options: levels, help: 'settings.agent_edit_help' },
    ],
    onSubmit: async (values) => {
      await api.put('/settings/access', values);
      notify(t('common.saved'));
    },
  });
  const forwardBox = forward ? forwardAddress(forward.address) : h('p', { class: 'muted' }, t('settings.forward_none'));
  mount(page,
    pageHeader('settings.title'),
    section('settings.crm', crmForm),
    section('settings.access', h('p', { class: 'help' }, t('settings.access_help')), accessForm),
    section('settings.forward', forwardBox));
}

function forwardAddress(address) {
  const id = 'forward-address';
  const input = h('input', { id, type: 'text', readonly: true, value: address, class: 'mono', 'aria-describedby': id + '-help' });
  const copy = h('button', {
    type: 'button', class: 'btn',
    on: {
      click: async () => {
        input.select();
        try { await navigator.clipboard.writeText(address); notify(t('admin.copied')); } catch { notify(t('admin.copy_by_hand')); }
      },
    },
  }, t('admin.copy'));
  return h('div', { class: 'once' },
    h('label', { for: id }, t('settings.forward_label')),
    h('div', { class: 'once-row' }, input, copy),
    h('p', { class: 'help', id: id + '-help' }, t('settings.forward_help')));
}
