// Queues: members in turn order (add from the people, move up and down, remove), the
// member whose turn is next.

import { h, mount, uid } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section, badge } from '../lib/ui.js';
import { all, deleteButton } from './admin-kit.js';

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
  return form({
    resource: 'queues',
    submit,
    fields: [{ name: 'name', label: 'common.name', required: true, value: queue?.name }],
    extra: members.el,
    onSubmit: (values, el) => onSubmit({ ...values, members: members.value() }, el),
  });
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
    section('queues.edit', edit));
}
