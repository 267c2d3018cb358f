// Queues: members in turn order (add from the people, move up and down, remove), the
// member whose turn is next, how waiting callers are served (strategy, longest wait,
// wrap-up, position announcement, overflow), the music they hear, and the queue now
// (callers waiting, members with their presence).

import { h, mount, uid } from '../lib/dom.js';
import { t, fmt } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section, badge } from '../lib/ui.js';
import { all, deleteButton, enumChoices, table } from './admin-kit.js';
import { statusBadge, busyBadge, whileShown } from './presence.js';

/** The queueing settings as the API names them, with the API's defaults. */
const DEFAULTS = {
  strategy: 'in_turn', max_wait_s: 300, wrap_up_s: 0, announce_position: false,
  overflow: { action: 'voicemail', forward_to: null },
};

function settingsOf(queue) {
  const q = { ...DEFAULTS, ...(queue || {}) };
  return { ...q, overflow: { ...DEFAULTS.overflow, ...(q.overflow || {}) } };
}

function settingsFields(queue) {
  const q = settingsOf(queue);
  return [
    { name: 'strategy', label: 'queues.strategy', type: 'select', value: q.strategy, help: 'queues.strategy_help',
      options: enumChoices('queues.strategy', ['in_turn', 'ring_all', 'longest_idle']) },
    { name: 'max_wait_s', label: 'queues.max_wait_s', type: 'number', min: 0, value: q.max_wait_s, help: 'queues.max_wait_help' },
    { name: 'wrap_up_s', label: 'queues.wrap_up_s', type: 'number', min: 0, value: q.wrap_up_s, help: 'queues.wrap_up_help' },
    { name: 'announce_position', label: 'queues.announce_position', type: 'checkbox', value: q.announce_position },
    { name: 'overflow.action', label: 'queues.overflow', type: 'select', value: q.overflow.action, help: 'queues.overflow_help',
      options: enumChoices('queues.overflow', ['voicemail', 'forward', 'reject']) },
    { name: 'overflow.forward_to', label: 'queues.forward_to', type: 'tel', value: q.overflow.forward_to, placeholder: '+49…' },
  ];
}

/**
 * The queueing settings of the form's values that differ from the queue's (or the
 * defaults): a PATCH changes only what was changed.
 */
function changedSettings(values, queue) {
  const q = settingsOf(queue);
  const out = {};
  for (const key of ['strategy', 'max_wait_s', 'wrap_up_s', 'announce_position']) {
    if (key in values && values[key] !== q[key]) out[key] = values[key];
  }
  const overflow = { action: values['overflow.action'] || q.overflow.action, forward_to: values['overflow.forward_to'] || null };
  if (overflow.action !== 'forward') overflow.forward_to = null;
  if (overflow.action !== q.overflow.action || overflow.forward_to !== (q.overflow.forward_to || null)) out.overflow = overflow;
  return out;
}

/**
 * The ordered member list editor. `value()` is the API's `members` (user ids in order).
 * Changes are made here and saved with the form.
 */
function membersEditor(members, people) {
  const byId = Object.fromEntries(people.map((p) => [p.id, p]));
  const order = [...members];
  const list = h('ol', { class: 'members' });
  const status = h('p', { class: 'sr-only', role: 'status', 'aria-live': 'polite' });
  const pickId = uid('member-pick');
  const pick = h('select', { id: pickId, name: 'member_to_add' });
  const name = (id) => (byId[id] ? byId[id].name : id);

  function render(focus) {
    mount(list, order.map((id, i) => {
      const label = name(id);
      const up = h('button', { type: 'button', class: 'btn small', disabled: i === 0, 'aria-label': t('queues.move_up', { name: label }), on: { click: () => move(i, -1, 'up') } }, '↑');
      const down = h('button', { type: 'button', class: 'btn small', disabled: i === order.length - 1, 'aria-label': t('queues.move_down', { name: label }), on: { click: () => move(i, 1, 'down') } }, '↓');
      const remove = h('button', { type: 'button', class: 'btn small danger', 'aria-label': t('queues.remove_member', { name: label }), on: { click: () => drop(i) } }, t('queues.remove'));
      return h('li', { class: 'member', dataset: { user: id } },
        h('span', { class: 'member-name' }, label, byId[id]?.extension ? h('span', { class: 'muted' }, ` · ${byId[id].extension}`) : null),
        h('span', { class: 'member-actions' }, up, down, remove));
    }));
    if (!order.length) list.append(h('li', { class: 'muted' }, t('queues.no_members')));
    mount(pick, h('option', { value: '' }, t('queues.choose_person')),
      people.filter((p) => !order.includes(p.id)).map((p) => h('option', { value: p.id }, p.name)));
    if (focus) {
      const target = list.querySelector(`[data-user="${CSS.escape(focus.id)}"] [aria-label="${CSS.escape(t(focus.key, { name: name(focus.id) }))}"]`);
      (target && !target.disabled ? target : list.querySelector(`[data-user="${CSS.escape(focus.id)}"] button:not([disabled])`))?.focus();
    }
  }
  function move(i, step, dir) {
    const [id] = order.splice(i, 1);
    order.splice(i + step, 0, id);
    status.textContent = t('queues.moved', { name: name(id), position: i + step + 1 });
    render({ id, key: dir === 'up' ? 'queues.move_up' : 'queues.move_down' });
  }
  function drop(i) {
    const [id] = order.splice(i, 1);
    status.textContent = t('queues.removed', { name: name(id) });
    render();
    pick.focus();
  }
  const add = h('button', {
    type: 'button', class: 'btn',
    on: {
      click: () => {
        if (!pick.value) { pick.focus(); return; }
        order.push(pick.value);
        status.textContent = t('queues.added', { name: name(pick.value) });
        render();
        pick.focus();
      },
    },
  }, t('queues.add_member'));
  render();
  const el = h('fieldset', { class: 'members-editor', dataset: { field: 'members' } },
    h('legend', {}, t('queues.members')),
    h('p', { class: 'help' }, t('queues.members_help')),
    list,
    h('div', { class: 'add-row' }, h('div', { class: 'field' }, h('label', { for: pickId }, t('queues.person')), pick), add),
    status,
    h('p', { class: 'field-error', dataset: { for: 'members' }, hidden: true }));
  return { el, value: () => [...order] };
}

function queueForm(queue, people, submit, onSubmit) {
  const members = membersEditor(queue?.members || [], people);
  const settings = settingsFields(queue);
  const el = form({
    resource: 'queues',
    submit,
    fields: [{ name: 'name', label: 'common.name', required: true, value: queue?.name }, ...settings],
    extra: members.el,
    onSubmit: (values, f) => onSubmit({ name: values.name, members: members.value(), ...changedSettings(values, queue) }, f),
  });
  // The number to forward to matters only for the forward rule.
  const action = el.querySelector('[name="overflow.action"]');
  const forward = el.querySelector('[data-field="overflow.forward_to"]');
  const follow = () => { forward.hidden = action.value !== 'forward'; };
  action.addEventListener('change', follow);
  follow();
  return el;
}

/** Upload of the music waiting callers hear (a WAV file); without one, a built-in tone. */
function music(path, queue) {
  const upload = form({
    resource: 'music',
    submit: 'queues.music_upload',
    fields: [{ name: 'music', type: 'file', label: 'queues.music_file', accept: 'audio/wav,audio/x-wav,.wav', help: 'queues.music_help', required: true }],
    onSubmit: async (values, el) => {
      const file = el.querySelector('[name="music"]').files[0];
      if (!file) { el.querySelector('[name="music"]').focus(); notify(t('queues.music_choose'), 'error'); return; }
      await api.upload(`${path}/music`, file, 'audio/wav');
      notify(t('queues.music_uploaded'));
    },
  });
  const current = queue.music ? h('p', {}, badge(t('queues.music_own'), 'ok')) : h('p', { class: 'muted' }, t('queues.music_builtin'));
  return [current, upload];
}

/** The queue now: callers waiting (next first) and the members with presence and calls. */
function liveView(path, byId) {
  const el = h('div', { class: 'queue-live', 'aria-live': 'polite' });
  async function render() {
    let live;
    try { live = await api.get(`${path}/live`); } catch (err) { mount(el, h('p', { class: 'form-error' }, err.message)); return; }
    const now = Date.now();
    mount(el,
      h('h3', {}, t('queues.waiting', { count: live.waiting.length })),
      table([
        { label: 'queues.position', render: (w) => String(w.position) },
        { label: 'queues.caller', render: (w) => w.caller },
        { label: 'queues.waiting_for', render: (w) => fmt.duration((now - Date.parse(w.since)) / 1000) },
        { label: 'queues.waiting_since', render: (w) => fmt.time(w.since) },
      ], live.waiting, { caption: 'queues.waiting_caption', empty: 'queues.nobody_waiting' }),
      h('h3', {}, t('queues.agents')),
      h('ul', { class: 'live-agents' }, live.agents.map((a) => h('li', { dataset: { user: a.user, status: a.status } },
        h('span', { class: 'member-name' }, byId[a.user] || a.user), ' ', statusBadge(a.status), ' ', busyBadge(a))),
      live.agents.length ? null : h('li', { class: 'muted' }, t('queues.no_members'))));
  }
  render();
  whileShown(el, render, ['leadline:presence', 'leadline:call']);
  return el;
}

export default async function queuesPage(page, params) {
  const people = await all('/users');
  if (params.id) return queueDetail(page, params.id, people);
  const byId = Object.fromEntries(people.map((p) => [p.id, p.name]));
  const list = listView({
    resource: 'queues',
    columns: [
      { label: 'common.name', render: (q) => q.name },
      { label: 'queues.members', render: (q) => q.members.map((m) => byId[m] || m).join(', ') || '—' },
      { label: 'queues.next', render: (q) => (q.next ? byId[q.next] || q.next : '—') },
      { label: 'queues.strategy', render: (q) => t('queues.strategy.' + settingsOf(q).strategy) },
    ],
    load: (query) => api.get('/queues', query),
    link: (q) => `#/queues/${q.id}`,
  });
  const create = queueForm(null, people, 'queues.create', async (values) => {
    const queue = await api.post('/queues', values);
    notify(t('queues.created', { name: queue.name }));
    location.hash = `#/queues/${queue.id}`;
  });
  mount(page, pageHeader('queues.title'), list, section('queues.new', create));
}

async function queueDetail(page, id, people) {
  const path = `/queues/${encodeURIComponent(id)}`;
  const queue = await api.get(path);
  const byId = Object.fromEntries(people.map((p) => [p.id, p.name]));
  const edit = queueForm(queue, people, 'common.save', async (values) => {
    await api.patch(path, values);
    notify(t('common.saved'));
    mount(page);
    await queueDetail(page, id, people);
  });
  const remove = deleteButton({ path, confirmKey: 'queues.confirm_delete', vars: { name: queue.name }, done: () => { location.hash = '#/queues'; } });
  mount(page,
    pageHeader({ text: queue.name }, h('a', { class: 'btn', href: '#/queues' }, t('common.back')), remove),
    queue.next ? h('p', {}, t('queues.next_is'), ' ', badge(byId[queue.next] || queue.next)) : null,
    section('queues.live', liveView(path, byId)),
    section('queues.edit', edit),
    section('queues.music', music(path, queue)));
}
