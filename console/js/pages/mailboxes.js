// Mailboxes: IMAP connection (password or OAuth2; secrets write-only), what is taken to
// the CRM, the live state with the last error, and a connection test.

import { h, mount } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api, ApiError } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section, badge, facts } from '../lib/ui.js';
import { all, choices, enumChoices, deleteButton, secretState, when } from './admin-kit.js';

const STATE_KIND = { idle: 'ok', syncing: 'ok', connecting: 'warn', error: 'bad' };
const OAUTH = ['provider', 'token_url', 'device_authorization_url', 'client_id', 'client_secret', 'refresh_token', 'scope'];

export function stateBadge(state) {
  return badge(t('mailboxes.state.' + state), STATE_KIND[state] || 'muted');
}

function fields(m, people, queues) {
  const editing = !!m;
  const o = m?.oauth2;
  const nullable = editing ? 'null' : 'omit';
  return [
    { name: 'name', label: 'common.name', required: true, value: m?.name },
    { name: 'kind', type: 'select', label: 'mailboxes.kind', value: m?.kind || 'company', options: enumChoices('mailboxes.kind', ['company', 'personal']) },
    { name: 'owner', type: 'select', label: 'mailboxes.owner', value: m?.owner, empty: nullable, options: choices(people, (p) => p.name, 'mailboxes.no_owner'), help: 'mailboxes.owner_help' },
    { name: 'address', type: 'email', label: 'mailboxes.address', value: m?.address, help: 'mailboxes.address_help' },
    { name: 'host', label: 'mailboxes.host', required: true, value: m?.host },
    { name: 'port', type: 'number', label: 'mailboxes.port', value: m?.port, min: 1, max: 65535, help: 'mailboxes.port_help' },
    { name: 'security', type: 'select', label: 'mailboxes.security', value: m?.security || 'tls', options: enumChoices('mailboxes.security', ['tls', 'starttls', 'none']) },
    { name: 'username', label: 'mailboxes.username', required: true, value: m?.username, autocomplete: 'off' },
    { name: 'auth', type: 'select', label: 'mailboxes.auth', value: m?.auth || 'password', options: enumChoices('mailboxes.auth', ['password', 'oauth2']) },
    { name: 'password', type: 'password', label: 'mailboxes.password', autocomplete: 'new-password', help: editing && m.auth === 'password' ? 'users.secret_kept' : null },
    { name: 'oauth2.provider', type: 'select', label: 'mailboxes.oauth2.provider', value: o?.provider || '', empty: 'null', options: [{ value: '', label: 'mailboxes.oauth2.own' }, { value: 'microsoft', label: { text: 'Microsoft 365' } }, { value: 'google', label: { text: 'Google' } }] },
    { name: 'oauth2.token_url', type: 'url', label: 'mailboxes.oauth2.token_url', value: o?.token_url, help: 'mailboxes.oauth2.preset_help' },
    { name: 'oauth2.device_authorization_url', type: 'url', label: 'mailboxes.oauth2.device_authorization_url', value: o?.device_authorization_url },
    { name: 'oauth2.client_id', label: 'mailboxes.oauth2.client_id', value: o?.client_id, autocomplete: 'off' },
    { name: 'oauth2.client_secret', type: 'password', label: 'mailboxes.oauth2.client_secret', autocomplete: 'new-password', help: o?.client_secret_set ? 'users.secret_kept' : 'mailboxes.oauth2.public_client' },
    { name: 'oauth2.refresh_token', type: 'password', label: 'mailboxes.oauth2.refresh_token', autocomplete: 'off', help: 'mailboxes.oauth2.refresh_help' },
    { name: 'oauth2.scope', label: 'mailboxes.oauth2.scope', value: o?.scope },
    { name: 'folders', type: 'list', label: 'mailboxes.folders', value: m?.folders, help: 'mailboxes.folders_help' },
    { name: 'spam_folder', label: 'mailboxes.spam_folder', value: m?.spam_folder, empty: nullable },
    { name: 'sync_window_days', type: 'number', label: 'mailboxes.sync_window_days', value: editing ? m.sync_window_days : 3, min: 0, empty: nullable, help: 'mailboxes.sync_window_help' },
    { name: 'check', type: 'select', label: 'mailboxes.check', value: m?.check || 'idle', options: enumChoices('mailboxes.check', ['idle', '2m', '5m', '10m', '1h', '3h', '12h']) },
    { name: 'queue', type: 'select', label: 'numbers.queue', value: m?.queue, empty: nullable, options: choices(queues, (q) => q.name, 'numbers.no_queue') },
    { name: 'crm_link', type: 'checkbox', label: 'mailboxes.crm_link', value: m ? m.crm_link : true },
    { name: 'create_leads_incoming', type: 'checkbox', label: 'mailboxes.create_leads_incoming', value: m ? m.create_leads_incoming : true },
    { name: 'create_leads_outgoing', type: 'checkbox', label: 'mailboxes.create_leads_outgoing', value: m?.create_leads_outgoing },
    { name: 'vcard_contacts', type: 'checkbox', label: 'mailboxes.vcard_contacts', value: m?.vcard_contacts },
    { name: 'route_to_responsible', type: 'checkbox', label: 'numbers.route_to_responsible', value: m ? m.route_to_responsible : true },
    { name: 'blacklist', type: 'list', label: 'mailboxes.blacklist', value: m?.blacklist, help: 'mailboxes.blacklist_help' },
  ];
}

/** The form's flat values as the API wants them: `oauth2.*` nested, only for OAuth2. */
function shape(values, editing) {
  const out = {};
  const oauth2 = {};
  for (const [key, value] of Object.entries(values)) {
    if (key.startsWith('oauth2.')) oauth2[key.slice(7)] = value;
    else out[key] = value;
  }
  if (out.auth === 'oauth2') {
    // Write-only secrets left empty are kept; everything else is sent as typed.
    for (const key of OAUTH) if (oauth2[key] === undefined) delete oauth2[key];
    out.oauth2 = oauth2;
    delete out.password;
  }
  if (Array.isArray(out.folders) && !out.folders.length) {
    if (editing) out.folders = null; else delete out.folders;
  }
  if (out.kind === 'company' && editing) out.owner = null;
  return out;
}

/** Shows the OAuth2 fields only for OAuth2 mailboxes, the password only for the others. */
function followAuth(el) {
  const auth = el.querySelector('[name="auth"]');
  const sync = () => {
    const oauth = auth.value === 'oauth2';
    el.querySelectorAll('[data-field^="oauth2."]').forEach((row) => { row.hidden = !oauth; });
    el.querySelector('[data-field="password"]').hidden = oauth;
  };
  auth.addEventListener('change', sync);
  sync();
}

export default async function mailboxesPage(page, params) {
  const [people, queues] = await Promise.all([all('/users'), all('/queues')]);
  if (params.id) return mailboxDetail(page, params.id, people, queues);
  const list = listView({
    resource: 'mailboxes',
    columns: [
      { label: 'common.name', render: (m) => m.name },
      { label: 'mailboxes.address', render: (m) => m.address },
      { label: 'mailboxes.kind', render: (m) => t('mailboxes.kind.' + m.kind) },
      { label: 'mailboxes.state', render: (m) => stateBadge(m.state) },
      { label: 'mailboxes.last_error', render: (m) => m.last_error || '—' },
      { label: 'mailboxes.last_sync', render: (m) => when(m.last_sync_at) },
    ],
    load: (query) => api.get('/mailboxes', query),
    link: (m) => `#/mailboxes/${m.id}`,
  });
  const create = form({
    resource: 'mailboxes',
    submit: 'mailboxes.create',
    fields: fields(null, people, queues),
    onSubmit: async (values) => {
      const m = await api.post('/mailboxes', shape(values, false));
      notify(t('mailboxes.created', { name: m.name }));
      location.hash = `#/mailboxes/${m.id}`;
    },
  });
  followAuth(create);
  mount(page, pageHeader('mailboxes.title'), list, section('mailboxes.new', create));
}

async function mailboxDetail(page, id, people, queues) {
  const path = `/mailboxes/${encodeURIComponent(id)}`;
  const m = await api.get(path);
  const edit = form({
    resource: 'mailboxes',
    fields: fields(m, people, queues),
    onSubmit: async (values) => {
      await api.patch(path, shape(values, true));
      notify(t('common.saved'));
      mount(page);
      await mailboxDetail(page, id, people, queues);
    },
  });
  followAuth(edit);
  const result = h('div', { role: 'status', 'aria-live': 'polite' });
  const test = h('button', {
    type: 'button', class: 'btn primary',
    on: {
      click: async () => {
        test.disabled = true;
        mount(result, h('p', { class: 'muted' }, t('mailboxes.testing')));
        try {
          await api.post(`${path}/test`);
          mount(result, h('p', { class: 'ok-text' }, badge(t('mailboxes.test_ok'), 'ok')));
        } catch (err) {
          const code = err instanceof ApiError ? err.code : '';
          mount(result, h('p', { class: 'form-error' }, t('mailboxes.test_failed'), ' ', err.message, code ? h('span', { class: 'muted' }, ` (${code})`) : null));
        } finally {
          test.disabled = false;
        }
      },
    },
  }, t('mailboxes.test'));
  const remove = deleteButton({ path, confirmKey: 'mailboxes.confirm_delete', vars: { name: m.name }, done: () => { location.hash = '#/mailboxes'; } });
  mount(page,
    pageHeader({ text: m.name }, h('a', { class: 'btn', href: '#/mailboxes' }, t('common.back')), remove),
    section('mailboxes.status', facts([
      ['mailboxes.state', stateBadge(m.state)],
      ['mailboxes.last_error', m.last_error || '—'],
      ['mailboxes.last_sync', when(m.last_sync_at)],
      m.oauth2 ? ['mailboxes.oauth2.client_secret', secretState(m.oauth2.client_secret_set)] : null,
      m.oauth2 ? ['mailboxes.oauth2.refresh_token', secretState(m.oauth2.refresh_token_set)] : null,
    ]), h('p', {}, test), result),
    section('mailboxes.edit', edit));
}
