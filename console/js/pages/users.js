// People: employees with their role, extension, phones, SIP password and console password.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, confirmAction, badge, section } from '../lib/ui.js';
import { shownOnce, table, when, deleteButton, secretState } from './admin-kit.js';

const ROLES = [
  { value: 'agent', label: 'role.agent' },
  { value: 'admin', label: 'role.admin' },
];

function fields(user) {
  const editing = !!user;
  return [
    { name: 'name', label: 'common.name', required: true, value: user?.name },
    { name: 'email', type: 'email', label: 'common.email', required: true, value: user?.email },
    { name: 'role', type: 'select', label: 'users.role', options: ROLES, value: user?.role || 'agent' },
    { name: 'extension', label: 'users.extension', value: user?.extension, help: 'users.extension_help', inputmode: 'numeric', empty: editing ? 'null' : 'omit' },
    { name: 'phones', type: 'list', label: 'users.phones', value: user?.phones, help: 'users.phones_help' },
    { name: 'sip_password', type: 'password', label: 'users.sip_password', help: editing && user.sip_password_set ? 'users.secret_kept' : 'users.sip_password_help', autocomplete: 'new-password' },
    { name: 'password', type: 'password', label: 'users.password', help: editing && user.password_set ? 'users.password_reset_help' : 'users.password_help', autocomplete: 'new-password' },
  ];
}

export default async function usersPage(page, params) {
  if (params.id) return userDetail(page, params.id);
  const list = listView({
    resource: 'users',
    columns: [
      { label: 'common.name', render: (u) => u.name },
      { label: 'common.email', render: (u) => u.email },
      { label: 'users.role', render: (u) => t('role.' + u.role) },
      { label: 'users.extension', render: (u) => u.extension },
      { label: 'users.phones', render: (u) => u.phones.join(', ') },
      { label: 'users.sip', render: (u) => secretState(u.sip_password_set) },
      { label: 'users.signin', render: (u) => (u.password_set ? badge(t('users.password_set'), 'ok') : badge(t('users.no_password'), 'muted')) },
    ],
    load: (query) => api.get('/users', query),
    link: (u) => `#/users/${u.id}`,
  });
  const create = form({
    resource: 'users',
    submit: 'users.create',
    fields: fields(null),
    onSubmit: async (values, el) => {
      const user = await api.post('/users', values);
      notify(t('users.created', { name: user.name }));
      el.reset();
      list.reload();
    },
  });
  mount(page,
    pageHeader('users.title'),
    list,
    section('users.new', create));
}

async function userDetail(page, id) {
  const user = await api.get(`/users/${encodeURIComponent(id)}`);
  const edit = form({
    resource: 'users',
    fields: fields(user),
    onSubmit: async (values) => {
      const saved = await api.patch(`/users/${encodeURIComponent(id)}`, values);
      notify(t('common.saved'));
      mount(page);
      await userDetail(page, saved.id);
    },
  });
  const remove = h('button', {
    type: 'button',
    class: 'btn danger',
    on: {
      click: async () => {
        if (!confirmAction('users.confirm_delete', { name: user.name })) return;
        await api.del(`/users/${encodeURIComponent(id)}`);
        notify(t('common.deleted'));
        location.hash = '#/users';
      },
    },
  }, t('common.delete'));
  mount(page,
    pageHeader({ text: user.name }, h('a', { class: 'btn', href: '#/users' }, t('common.back')), remove),
    section('users.edit', edit),
    section('tokens.title', await tokens(id)));
}

/** The person's API tokens: the list (never the tokens themselves), a new one, revoking. */
async function tokens(id) {
  const base = `/users/${encodeURIComponent(id)}/tokens`;
  const box = h('div', { class: 'tokens' });
  const fresh = h('div', { class: 'token-new' });
  async function load() {
    let items = [];
    try {
      const answer = await api.get(base);
      items = answer.items;
    } catch (err) {
      mount(box, h('p', { class: 'form-error', role: 'alert' }, err.message));
      return;
    }
    mount(box, table([
      { label: 'tokens.created', render: (tk) => when(tk.created_at) },
      { label: 'tokens.last_used', render: (tk) => when(tk.last_used_at) },
      { label: 'tokens.actions', render: (tk) => deleteButton({ path: `${base}/${encodeURIComponent(tk.id)}`, confirmKey: 'tokens.confirm_revoke', label: 'tokens.revoke', small: true, done: load }) },
    ], items, { caption: 'tokens.title', empty: 'tokens.none' }));
  }
  const create = h('button', {
    type: 'button',
    class: 'btn',
    on: {
      click: async () => {
        create.disabled = true;
        try {
          const answer = await api.post(base);
          mount(fresh, shownOnce(answer.token, 'tokens.shown_once'));
          fresh.querySelector('input').focus();
          await load();
        } catch (err) {
          notify(err.message, 'error');
        } finally {
          create.disabled = false;
        }
      },
    },
  }, t('tokens.create'));
  await load();
  return [h('p', { class: 'help' }, t('tokens.help')), box, h('p', {}, create), fresh];
}
