// Pipelines and their stages in order: add, rename, reorder and remove stages; the default
// pipeline takes the deals from calls and e-mail.

import { h, mount, uid } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { pageHeader, notify, section, badge } from '../lib/ui.js';
import { deleteButton, enumChoices } from './admin-kit.js';

const STATUSES = ['open', 'won', 'lost'];

/** The ordered stages editor; `value()` is the API's `stages` ([{id?, name, status}]). */
function stagesEditor(stages) {
  const list = h('ol', { class: 'stages' });
  const status = h('p', { class: 'sr-only', role: 'status', 'aria-live': 'polite' });
  function row(stage) {
    const nameId = uid('stage-name');
    const statusId = uid('stage-status');
    const li = h('li', { class: 'stage', dataset: { id: stage.id || '' } });
    const name = h('input', { id: nameId, value: stage.name || '', class: 'stage-name' });
    const select = h('select', { id: statusId, class: 'stage-status' },
      enumChoices('pipelines.status', STATUSES).map((o) => h('option', { value: o.value, selected: o.value === (stage.status || 'open') }, t(o.label))));
    const up = h('button', { type: 'button', class: 'btn small', on: { click: () => { if (li.previousElementSibling) { list.insertBefore(li, li.previousElementSibling); renumber(); up.focus(); status.textContent = t('pipelines.moved'); } } } }, '↑');
    const down = h('button', { type: 'button', class: 'btn small', on: { click: () => { if (li.nextElementSibling) { list.insertBefore(li.nextElementSibling, li); renumber(); down.focus(); status.textContent = t('pipelines.moved'); } } } }, '↓');
    const remove = h('button', { type: 'button', class: 'btn small danger', on: { click: () => { li.remove(); renumber(); addButton.focus(); status.textContent = t('pipelines.stage_removed'); } } }, t('queues.remove'));
    li.append(
      h('div', { class: 'field' }, h('label', { for: nameId }, t('pipelines.stage_name')), name),
      h('div', { class: 'field' }, h('label', { for: statusId }, t('pipelines.stage_status')), select),
      h('span', { class: 'member-actions' }, up, down, remove));
    li.refresh = () => {
      const label = name.value || t('pipelines.stage');
      up.setAttribute('aria-label', t('queues.move_up', { name: label }));
      down.setAttribute('aria-label', t('queues.move_down', { name: label }));
      remove.setAttribute('aria-label', t('queues.remove_member', { name: label }));
    };
    name.addEventListener('change', li.refresh);
    return li;
  }
  function renumber() {
    [...list.children].forEach((li, i) => {
      li.querySelector('.stage-name').name = `stages[${i}].name`;
      li.querySelector('.stage-status').name = `stages[${i}].status`;
      li.refresh();
    });
  }
  const addButton = h('button', { type: 'button', class: 'btn', on: { click: () => { list.append(row({})); renumber(); list.lastElementChild.querySelector('input').focus(); } } }, t('pipelines.add_stage'));
  stages.forEach((s) => list.append(row(s)));
  renumber();
  const el = h('fieldset', { class: 'stages-editor', dataset: { field: 'stages' } },
    h('legend', {}, t('pipelines.stages')),
    h('p', { class: 'help' }, t('pipelines.stages_help')),
    list, h('p', {}, addButton), status,
    h('p', { class: 'field-error', dataset: { for: 'stages' }, hidden: true }));
  const value = () => [...list.children].map((li) => {
    const out = { name: li.querySelector('.stage-name').value.trim(), status: li.querySelector('.stage-status').value };
    if (li.dataset.id) out.id = li.dataset.id;
    return out;
  });
  return { el, value };
}

export default async function pipelinesPage(page) {
  const { items } = await api.get('/pipelines');
  const reload = async () => { mount(page); await pipelinesPage(page); };
  const cards = items.map((p) => {
    const stages = stagesEditor(p.stages);
    const edit = form({
      resource: 'pipelines',
      fields: [
        { name: 'name', label: 'common.name', required: true, value: p.name },
        p.is_default ? null : { name: 'is_default', type: 'checkbox', label: 'pipelines.make_default' },
      ].filter(Boolean),
      extra: stages.el,
      onSubmit: async (values) => {
        const patch = { name: values.name };
        if (values.is_default) patch.is_default = true;
        await api.patch(`/pipelines/${encodeURIComponent(p.id)}`, patch);
        await api.put(`/pipelines/${encodeURIComponent(p.id)}/stages`, { stages: stages.value() });
        notify(t('common.saved'));
        await reload();
      },
    });
    return h('section', { class: 'card' },
      h('h2', {}, p.name, ' ', p.is_default ? badge(t('pipelines.default'), 'ok') : null),
      edit,
      p.is_default ? null : h('p', {}, deleteButton({ path: `/pipelines/${encodeURIComponent(p.id)}`, confirmKey: 'pipelines.confirm_delete', vars: { name: p.name }, done: reload })));
  });
  const newStages = stagesEditor([{ name: '', status: 'open' }]);
  const create = form({
    resource: 'pipelines',
    submit: 'pipelines.create',
    fields: [
      { name: 'name', label: 'common.name', required: true },
      { name: 'is_default', type: 'checkbox', label: 'pipelines.make_default' },
    ],
    extra: newStages.el,
    onSubmit: async (values) => {
      await api.post('/pipelines', { ...values, stages: newStages.value().map(({ name, status }) => ({ name, status })) });
      notify(t('common.saved'));
      await reload();
    },
  });
  mount(page, pageHeader('pipelines.title'), cards, section('pipelines.new', create));
}
