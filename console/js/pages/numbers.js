// Numbers: every setting of a number, its weekly hours, the after-hours rule and the
// voicemail greeting.

import { h, mount, uid } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form, fieldRow } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, section, badge } from '../lib/ui.js';
import { all, choices, enumChoices, deleteButton, yesNo } from './admin-kit.js';

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

async function references() {
  const [trunks, queues, sources] = await Promise.all([
    all('/trunks'), all('/queues'), api.get('/sources'),
  ]);
  return { trunks, queues, sources: sources.items || sources };
}

function fields(n, refs) {
  const editing = !!n;
  return [
    editing ? null : { name: 'number', type: 'tel', label: 'numbers.number', required: true, help: 'numbers.number_help' },
    { name: 'trunk', type: 'select', label: 'numbers.trunk', value: n?.trunk, empty: editing ? 'null' : 'omit',
      options: choices(refs.trunks, (x) => x.name, 'numbers.no_trunk'), help: 'numbers.trunk_help' },
    { name: 'queue', type: 'select', label: 'numbers.queue', value: n?.queue, empty: editing ? 'null' : 'omit',
      options: choices(refs.queues, (x) => x.name, 'numbers.no_queue') },
    { name: 'default_country', label: 'numbers.default_country', value: n?.default_country, help: 'numbers.default_country_help' },
    { name: 'lead_creation', type: 'select', label: 'numbers.lead_creation', value: n?.lead_creation || 'automatic',
      options: enumChoices('numbers.lead_creation', ['automatic', 'manual', 'off']) },
    { name: 'directions', type: 'select', label: 'numbers.directions', value: n?.directions || 'incoming',
      options: enumChoices('numbers.directions', ['incoming', 'outgoing', 'both']) },
    { name: 'source', type: 'select', label: 'numbers.source', value: n?.source || 'CALL',
      options: refs.sources.map((s) => ({ value: s.code, label: { text: `${s.name} (${s.code})` } })) },
    { name: 'ring_timeout_s', type: 'number', label: 'numbers.ring_timeout_s', value: n?.ring_timeout_s ?? 20, min: 5, max: 300, help: 'numbers.ring_timeout_help' },
    { name: 'route_to_responsible', type: 'checkbox', label: 'numbers.route_to_responsible', value: n ? n.route_to_responsible : true },
    { name: 'change_responsible_on_transfer', type: 'checkbox', label: 'numbers.change_responsible_on_transfer', value: n?.change_responsible_on_transfer },
    { name: 'media_relay', type: 'checkbox', label: 'numbers.media_relay', value: n ? n.media_relay : true },
    { name: 'recording', type: 'checkbox', label: 'numbers.recording', value: n?.recording },
    { name: 'recording_channels', type: 'select', label: 'numbers.recording_channels', value: n?.recording_channels || 'split',
      options: enumChoices('numbers.channels', ['split', 'mixed']) },
  ].filter(Boolean);
}

/** An error slot for a group of inputs, named after the API field. */
function slot(name, id) {
  return h('p', { class: 'field-error', id, dataset: { for: name }, hidden: true });
}

/**
 * The weekly hours editor: always open, or a time zone, per weekday one or more from–to
 * ranges, and days off. `value()` is the API's `hours` (null = always open).
 */
export function hoursEditor(hours) {
  const base = uid('hours');
  const modeName = base + '-mode';
  const always = h('input', { type: 'radio', id: base + '-always', name: modeName, value: 'always', checked: !hours });
  const scheduled = h('input', { type: 'radio', id: base + '-week', name: modeName, value: 'week', checked: !!hours });
  const tzId = base + '-tz';
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  const tz = h('input', {
    id: tzId, name: 'hours.tz', list: tzId + '-zones', autocomplete: 'off',
    value: hours?.tz || Intl.DateTimeFormat().resolvedOptions().timeZone || 'Europe/Berlin',
    'aria-describedby': tzId + '-error',
  });
  const days = {};
  const adders = {};
  const dayBoxes = DAYS.map((day) => {
    const errorId = `${base}-${day}-error`;
    const rows = h('ul', { class: 'ranges' });
    const addRange = (from = '', to = '') => {
      const fromId = uid(`${base}-${day}-from`);
      const toId = uid(`${base}-${day}-to`);
      const row = h('li', { class: 'range' },
        h('label', { for: fromId }, t('hours.from')),
        h('input', { id: fromId, type: 'time', value: from, class: 'time', dataset: { part: 'from' }, 'aria-describedby': errorId }),
        h('label', { for: toId }, t('hours.to')),
        h('input', { id: toId, type: 'time', value: to, class: 'time', dataset: { part: 'to' }, 'aria-describedby': errorId }));
      const remove = h('button', {
        type: 'button', class: 'btn small',
        'aria-label': t('hours.remove_range_of', { day: t('day.' + day) }),
        on: { click: () => { row.remove(); renumber(); } },
      }, t('hours.remove'));
      row.append(remove);
      rows.append(row);
      renumber();
    };
    const closed = h('p', { class: 'muted closed' }, t('hours.closed'));
    const renumber = () => {
      [...rows.children].forEach((row, i) => {
        row.querySelector('[data-part="from"]').name = `hours.week.${day}[${i}][0]`;
        row.querySelector('[data-part="to"]').name = `hours.week.${day}[${i}][1]`;
      });
      closed.hidden = rows.children.length > 0;
    };
    for (const [from, to] of hours?.week?.[day] || []) addRange(from, to === '24:00' ? '00:00' : to);
    renumber();
    days[day] = rows;
    adders[day] = addRange;
    return h('fieldset', { class: 'day', dataset: { field: `hours.week.${day}`, day } },
      h('legend', {}, t('day.' + day)),
      closed, rows,
      h('button', {
        type: 'button', class: 'btn small add-range',
        'aria-label': t('hours.add_range_to', { day: t('day.' + day) }),
        on: { click: () => { addRange('09:00', '18:00'); rows.lastElementChild.querySelector('input').focus(); } },
      }, t('hours.add')),
      slot(`hours.week.${day}`, errorId));
  });

  const offList = h('ul', { class: 'ranges' });
  const offError = base + '-off-error';
  const addOff = (date = '') => {
    const id = uid(base + '-off');
    const row = h('li', { class: 'range' },
      h('label', { for: id }, t('hours.day_off')),
      h('input', { id, type: 'date', value: date, class: 'date', 'aria-describedby': offError }),
      h('button', { type: 'button', class: 'btn small', on: { click: () => { row.remove(); renumberOff(); } } }, t('hours.remove')));
    offList.append(row);
    renumberOff();
  };
  const renumberOff = () => [...offList.querySelectorAll('input')].forEach((input, i) => { input.name = `hours.days_off[${i}]`; });
  for (const date of hours?.days_off || []) addOff(date);

  const copyWeekdays = h('button', {
    type: 'button', class: 'btn small',
    on: {
      click: () => {
        const monday = [...days.mon.querySelectorAll('li')].map((li) => [li.querySelector('[data-part="from"]').value, li.querySelector('[data-part="to"]').value]);
        for (const day of ['tue', 'wed', 'thu', 'fri']) {
          days[day].replaceChildren();
          for (const [from, to] of monday) adders[day](from, to);
          dayBoxes[DAYS.indexOf(day)].querySelector('.closed').hidden = monday.length > 0;
        }
        notify(t('hours.copied'));
      },
    },
  }, t('hours.copy_monday'));

  const schedule = h('div', { class: 'schedule' },
    h('div', { class: 'field', dataset: { field: 'hours.tz' } },
      h('label', { for: tzId }, t('hours.tz')),
      tz,
      h('datalist', { id: tzId + '-zones' }, zones.map((z) => h('option', { value: z }))),
      slot('hours.tz', tzId + '-error')),
    h('div', { class: 'week' }, dayBoxes),
    h('p', {}, copyWeekdays),
    h('fieldset', { class: 'days-off', dataset: { field: 'hours.days_off' } },
      h('legend', {}, t('hours.days_off')),
      offList,
      h('button', { type: 'button', class: 'btn small', on: { click: () => { addOff(); offList.lastElementChild.querySelector('input').focus(); } } }, t('hours.add_day_off')),
      slot('hours.days_off', offError)));
  const sync = () => { schedule.hidden = !scheduled.checked; };
  always.addEventListener('change', sync);
  scheduled.addEventListener('change', sync);
  sync();

  const el = h('fieldset', { class: 'hours-editor', dataset: { field: 'hours' } },
    h('legend', {}, t('hours.title')),
    h('div', { class: 'field-check' }, always, h('label', { for: always.id }, t('hours.always'))),
    h('div', { class: 'field-check' }, scheduled, h('label', { for: scheduled.id }, t('hours.scheduled'))),
    schedule,
    slot('hours', base + '-error'));

  function value() {
    if (!scheduled.checked) return null;
    const week = {};
    for (const day of DAYS) {
      const ranges = [...days[day].children].map((li) => [
        li.querySelector('[data-part="from"]').value,
        li.querySelector('[data-part="to"]').value,
      ]);
      if (ranges.length) week[day] = ranges;
    }
    const daysOff = [...offList.querySelectorAll('input')].map((i) => i.value).filter(Boolean);
    return { tz: tz.value.trim(), week, days_off: daysOff };
  }
  return { el, value };
}

/** The after-hours rule: nothing, voicemail, forward or reject. `value()` is the API's. */
export function afterHoursEditor(rule) {
  const action = fieldRow({
    name: 'after_hours.action', type: 'select', label: 'after_hours.action', value: rule?.action || '',
    options: [{ value: '', label: 'after_hours.none' }, ...enumChoices('after_hours.action', ['voicemail', 'forward', 'reject'])],
    help: 'after_hours.help',
  });
  const forward = fieldRow({ name: 'after_hours.forward_to', type: 'tel', label: 'after_hours.forward_to', value: rule?.forward_to });
  const max = fieldRow({ name: 'after_hours.max_message_s', type: 'number', label: 'after_hours.max_message_s', value: rule?.max_message_s ?? 120, min: 5, max: 600 });
  const select = action.querySelector('select');
  const sync = () => {
    forward.hidden = select.value !== 'forward';
    max.hidden = select.value !== 'voicemail';
  };
  select.addEventListener('change', sync);
  sync();
  const el = h('fieldset', { class: 'after-hours', dataset: { field: 'after_hours' } },
    h('legend', {}, t('after_hours.title')),
    action, forward, max,
    slot('after_hours', uid('after-hours-error')));
  function value() {
    if (!select.value) return null;
    const out = { action: select.value };
    if (select.value === 'forward') out.forward_to = forward.querySelector('input').value.trim();
    if (select.value === 'voicemail') {
      const seconds = max.querySelector('input').value.trim();
      if (seconds) out.max_message_s = Number(seconds);
    }
    return out;
  }
  return { el, value };
}

function numberForm(n, refs, onSubmit) {
  const hours = hoursEditor(n?.hours);
  const afterHours = afterHoursEditor(n?.after_hours);
  const el = form({
    resource: 'numbers',
    submit: n ? 'common.save' : 'numbers.create',
    fields: fields(n, refs),
    extra: [hours.el, afterHours.el],
    onSubmit: (values, formEl) => onSubmit({ ...values, hours: hours.value(), after_hours: afterHours.value() }, formEl),
  });
  return el;
}

export default async function numbersPage(page, params) {
  if (params.id) return numberDetail(page, params.id);
  const refs = await references();
  const trunkName = Object.fromEntries(refs.trunks.map((x) => [x.id, x.name]));
  const queueName = Object.fromEntries(refs.queues.map((x) => [x.id, x.name]));
  const list = listView({
    resource: 'numbers',
    columns: [
      { label: 'numbers.number', render: (n) => n.number },
      { label: 'numbers.trunk', render: (n) => trunkName[n.trunk] || n.trunk || '—' },
      { label: 'numbers.queue', render: (n) => queueName[n.queue] || n.queue || '—' },
      { label: 'numbers.lead_creation', render: (n) => t('numbers.lead_creation.' + n.lead_creation) },
      { label: 'hours.title', render: (n) => (n.hours ? badge(t('hours.scheduled_short'), 'warn') : badge(t('hours.always_short'), 'ok')) },
      { label: 'numbers.recording', render: (n) => yesNo(n.recording) },
    ],
    load: (query) => api.get('/numbers', query),
    link: (n) => `#/numbers/${n.id}`,
  });
  const create = numberForm(null, refs, async (values, el) => {
    if (values.hours === null) delete values.hours;
    if (values.after_hours === null) delete values.after_hours;
    const created = await api.post('/numbers', values);
    notify(t('numbers.created', { number: created.number }));
    el.reset();
    list.reload();
  });
  mount(page, pageHeader('numbers.title'), list, section('numbers.new', create));
}

async function numberDetail(page, id) {
  const path = `/numbers/${encodeURIComponent(id)}`;
  const [n, refs] = await Promise.all([api.get(path), references()]);
  const edit = numberForm(n, refs, async (values) => {
    await api.patch(path, values);
    notify(t('common.saved'));
    mount(page);
    await numberDetail(page, id);
  });
  const remove = deleteButton({
    path, confirmKey: 'numbers.confirm_delete', vars: { number: n.number },
    done: () => { location.hash = '#/numbers'; },
  });
  mount(page,
    pageHeader({ text: n.number }, h('a', { class: 'btn', href: '#/numbers' }, t('common.back')), remove),
    section('numbers.edit', edit),
    section('greeting.title', greeting(page, n, id)));
}

function greeting(page, n, id) {
  const path = `/numbers/${encodeURIComponent(id)}/greeting`;
  const reload = async () => { mount(page); await numberDetail(page, id); };
  const current = n.greeting
    ? h('div', { class: 'greeting' },
      h('p', {}, t('greeting.current')),
      h('audio', { controls: true, preload: 'none', src: n.greeting + '?v=' + Date.now(), 'aria-label': t('greeting.player') }),
      h('p', {}, deleteButton({ path, confirmKey: 'greeting.confirm_delete', label: 'greeting.remove', done: reload })))
    : h('p', { class: 'muted' }, t('greeting.none'));
  const upload = form({
    resource: 'greeting',
    submit: 'greeting.upload',
    fields: [{ name: 'greeting', type: 'file', label: 'greeting.file', accept: 'audio/wav,audio/x-wav,.wav', help: 'greeting.help', required: true }],
    onSubmit: async (values, el) => {
      const file = el.querySelector('[name="greeting"]').files[0];
      if (!file) {
        el.querySelector('[name="greeting"]').focus();
        notify(t('greeting.choose'), 'error');
        return;
      }
      await api.upload(path, file, 'audio/wav');
      notify(t('greeting.uploaded'));
      await reload();
    },
  });
  return [current, upload];
}
