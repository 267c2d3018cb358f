// Trunks: carriers we register to and PBXs that reach us, with the live registration
// state and tokens for a PBX's call events.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section, badge, facts } from '../lib/ui.js';
import { enumChoices, deleteButton, secretState, shownOnce, when, yesNo } from './admin-kit.js';

const STATE_KIND = { registered: 'ok', registering: 'warn', failed: 'bad', unregistered: 'muted' };

export function registrationBadge(registration) {
  if (!registration) return badge(t('trunks.no_registration'), 'muted');
  return badge(t('trunks.state.' + registration.state), STATE_KIND[registration.state]);
}

function fields(trunk) {
  const editing = !!trunk;
  return [
    { name: 'name', label: 'common.name', required: true, value: trunk?.name },
    editing ? null : { name: 'kind', type: 'select', label: 'trunks.kind', value: 'carrier', options: enumChoices('trunks.kind', ['carrier', 'pbx']), help: 'trunks.kind_help' },
    { name: 'profile', label: 'trunks.profile', value: trunk?.profile || 'generic', help: 'trunks.profile_help' },
    { name: 'host', label: 'trunks.host', value: trunk?.host, empty: editing ? 'null' : 'omit' },
    { name: 'port', type: 'number', label: 'trunks.port', value: trunk?.port ?? 5060, min: 1, max: 65535 },
    { name: 'transport', type: 'select', label: 'trunks.transport', value: trunk?.transport || 'udp', options: [{ value: 'udp', label: { text: 'UDP' } }, { value: 'tcp', label: { text: 'TCP' } }, { value: 'tls', label: { text: 'TLS' } }] },
    { name: 'username', label: 'trunks.username', value: trunk?.username, empty: editing ? 'null' : 'omit', autocomplete: 'off' },
    { name: 'password', type: 'password', label: 'trunks.password', autocomplete: 'new-password', help: trunk?.password_set ? 'users.secret_kept' : null },
    { name: 'register', type: 'checkbox', label: 'trunks.register', value: trunk ? trunk.register : true },
    { name: 'allowed_ips', type: 'list', label: 'trunks.allowed_ips', value: trunk?.allowed_ips, help: 'trunks.allowed_ips_help' },
    { name: 'media_relay', type: 'checkbox', label: 'trunks.media_relay', value: trunk?.media_relay, help: 'trunks.media_relay_help' },
  ].filter(Boolean);
}

export default async function trunksPage(page, params) {
  if (params.id) return trunkDetail(page, params.id);
  const list = listView({
    resource: 'trunks',
    columns: [
      { label: 'common.name', render: (x) => x.name },
      { label: 'trunks.kind', render: (x) => t('trunks.kind.' + x.kind) },
      { label: 'trunks.host', render: (x) => (x.host ? `${x.host}:${x.port}` : '—') },
      { label: 'trunks.registration', render: (x) => registrationBadge(x.registration) },
      { label: 'trunks.password', render: (x) => secretState(x.password_set) },
    ],
    load: (query) => api.get('/trunks', query),
    link: (x) => `#/trunks/${x.id}`,
  });
  const create = form({
    resource: 'trunks',
    submit: 'trunks.create',
    fields: fields(null),
    onSubmit: async (values) => {
      const trunk = await api.post('/trunks', values);
      notify(t('trunks.created', { name: trunk.name }));
      location.hash = `#/trunks/${trunk.id}`;
    },
  });
  mount(page, pageHeader('trunks.title'), list, section('trunks.new', create));
}

async function trunkDetail(page, id) {
  const path = `/trunks/${encodeURIComponent(id)}`;
  const trunk = await api.get(path);
  const edit = form({
    resource: 'trunks',
    fields: fields(trunk),
    onSubmit: async (values) => {
      await api.patch(path, values);
      notify(t('common.saved'));
      mount(page);
      await trunkDetail(page, id);
    },
  });
  const r = trunk.registration;
  const registration = r
    ? facts([
      ['trunks.state', registrationBadge(r)],
      ['trunks.registered_until', when(r.registered_until)],
      ['trunks.last_error', r.last_error || '—'],
      ['trunks.failures', String(r.failures)],
      ['trunks.next_attempt', when(r.next_attempt_at)],
      ['trunks.updated', when(r.updated_at)],
    ])
    : h('p', { class: 'muted' }, t('trunks.no_registration_help'));
  const refresh = h('button', { type: 'button', class: 'btn', on: { click: async () => { mount(page); await trunkDetail(page, id); } } }, t('trunks.refresh'));
  const tokenBox = h('div');
  const tokenButton = h('button', {
    type: 'button', class: 'btn',
    on: {
      click: async () => {
        try {
          const answer = await api.post(`${path}/tokens`);
          mount(tokenBox, shownOnce(answer.token, 'trunks.token_once'));
          tokenBox.querySelector('input').focus();
        } catch (err) {
          notify(err.message, 'error');
        }
      },
    },
  }, t('trunks.token_create'));
  const remove = deleteButton({ path, confirmKey: 'trunks.confirm_delete', vars: { name: trunk.name }, done: () => { location.hash = '#/trunks'; } });
  mount(page,
    pageHeader({ text: trunk.name }, h('a', { class: 'btn', href: '#/trunks' }, t('common.back')), remove),
    section('trunks.registration', registration, h('p', {}, refresh)),
    section('trunks.edit', facts([['trunks.kind', t('trunks.kind.' + trunk.kind)], ['trunks.password', secretState(trunk.password_set)], ['trunks.register', yesNo(trunk.register)]]), edit),
    trunk.kind === 'pbx' ? section('trunks.tokens', h('p', { class: 'help' }, t('trunks.tokens_help')), h('p', {}, tokenButton), tokenBox) : null);
}
