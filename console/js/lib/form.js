// Forms that post the API's own field names and show the API's answer beside the field it
// names. Every input has a visible <label>; an error is tied to its input with
// aria-describedby and aria-invalid, and the first one gets the focus.

import { h, uid } from './dom.js';
import { t } from './i18n.js';
import { ApiError } from './api.js';

/**
 * form({
 *   resource: 'users',                       // form[data-form="users"]
 *   fields: [{name, label, type, options, required, help, value, empty, placeholder}],
 *   submit: 'common.save',                    // catalogue key of the button
 *   onSubmit: async (values, form) => {...},  // throws ApiError to show it
 * })
 * type: text | email | password | tel | number | textarea | select | checkbox | list
 *   (list: one value per line, sent as an array) | time | date | file | hidden
 * empty: what an empty input sends: 'omit' (default) or 'null'.
 * options (select): [{value, label}] with label a catalogue key or {text}.
 */
export function form({ resource, fields, submit = 'common.save', onSubmit, extra, className }) {
  const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const button = h('button', { type: 'submit', class: 'btn primary' }, t(submit));
  const rows = fields.map(fieldRow);
  const el = h('form', { class: ['form', className], dataset: { form: resource }, novalidate: true },
    formError, rows, extra || null, h('div', { class: 'form-actions' }, button));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(el);
    const values = collect(el, fields);
    button.disabled = true;
    el.setAttribute('aria-busy', 'true');
    try {
      await onSubmit(values, el);
    } catch (err) {
      showError(el, err);
    } finally {
      button.disabled = false;
      el.removeAttribute('aria-busy');
    }
  });
  return el;
}

function labelText(label) {
  return typeof label === 'object' && label !== null ? label.text : t(label);
}

export function fieldRow(field) {
  if (field.type === 'hidden') {
    return h('input', { type: 'hidden', name: field.name, value: field.value ?? '' });
  }
  const id = uid('f-' + field.name);
  const errorId = id + '-error';
  const helpId = field.help ? id + '-help' : null;
  const describedBy = [helpId, errorId].filter(Boolean).join(' ');
  const common = {
    id,
    name: field.name,
    required: field.required || null,
    'aria-describedby': describedBy,
    placeholder: field.placeholder || null,
    autocomplete: field.autocomplete || null,
  };
  let input;
  switch (field.type) {
    case 'textarea':
      input = h('textarea', { ...common, rows: field.rows || 3 }, field.value ?? '');
      break;
    case 'list':
      input = h('textarea', { ...common, rows: field.rows || 2, dataset: { list: '1' } },
        (field.value || []).join('\n'));
      break;
    case 'select':
      input = h('select', common, (field.options || []).map((o) =>
        h('option', { value: o.value ?? '', selected: String(o.value ?? '') === String(field.value ?? '') },
          labelText(o.label))));
      break;
    case 'checkbox':
      input = h('input', { ...common, type: 'checkbox', checked: !!field.value });
      break;
    default:
      input = h('input', {
        ...common,
        type: field.type || 'text',
        value: field.value ?? '',
        min: field.min ?? null,
        max: field.max ?? null,
        step: field.step ?? null,
        accept: field.accept || null,
        inputmode: field.inputmode || null,
      });
  }
  const label = h('label', { for: id }, labelText(field.label), field.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null);
  return h('div', { class: ['field', field.type === 'checkbox' ? 'field-check' : null], dataset: { field: field.name } },
    field.type === 'checkbox' ? [input, label] : [label, input],
    field.help ? h('p', { class: 'help', id: helpId }, t(field.help)) : null,
    h('p', { class: 'field-error', id: errorId, dataset: { for: field.name }, hidden: true }));
}

/** The values of the form's fields as the API wants them. */
export function collect(el, fields) {
  const values = {};
  for (const field of fields) {
    if (field.type === 'file' || field.collect === false) continue;
    const input = el.querySelector(`[name="${field.name}"]`);
    if (!input) continue;
    let value;
    if (field.type === 'checkbox') {
      value = input.checked;
    } else if (field.type === 'list') {
      value = input.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
    } else if (field.type === 'number') {
      value = input.value.trim() === '' ? '' : Number(input.value);
    } else {
      value = input.value.trim();
      if (field.type === 'password' || field.keepSpaces) value = input.value;
    }
    if (value === '') {
      if (field.empty === 'null') values[field.name] = null;
      continue;
    }
    values[field.name] = value;
  }
  return values;
}

export function clearErrors(el) {
  el.querySelectorAll('.field-error').forEach((p) => { p.hidden = true; p.textContent = ''; });
  el.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
  const formError = el.querySelector('.form-error');
  if (formError) { formError.hidden = true; formError.textContent = ''; }
}

/**
 * The names an API field belongs to, most specific first: "hours.week.mon[0]" →
 * "hours.week.mon[0]", "hours.week.mon", "hours.week", "hours".
 */
export function fieldCandidates(field) {
  const names = [field];
  let rest = field;
  for (;;) {
    const cut = Math.max(rest.lastIndexOf('.'), rest.lastIndexOf('['));
    if (cut <= 0) break;
    rest = rest.slice(0, cut);
    names.push(rest);
  }
  return names;
}

/**
 * Shows an API error: beside the field it names when the form has that field or a group
 * holding it ("phones[1]" belongs to "phones", "hours.week.mon[0]" to the Monday row of
 * the hours editor or else to "hours"), else at the top of the form.
 */
export function showError(el, err) {
  const message = err instanceof ApiError ? err.message : t('common.network_error');
  const field = err instanceof ApiError && err.field ? err.field : null;
  if (field) {
    for (const name of fieldCandidates(field)) {
      const slot = el.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
      if (slot) {
        slot.textContent = message;
        slot.hidden = false;
        // The input of that name, or else the first one of the group the slot is in.
        const group = slot.closest('[data-field]');
        const input = el.querySelector(`[name="${CSS.escape(name)}"]`)
          || (group && (group.querySelector(`[name^="${CSS.escape(field)}"]`)
            || group.querySelector('input, select, textarea, button')));
        if (input) {
          input.setAttribute('aria-invalid', 'true');
          input.focus();
        }
        return;
      }
    }
  }
  const formError = el.querySelector('.form-error');
  if (formError) {
    formError.textContent = message;
    formError.hidden = false;
    formError.focus?.();
  }
}
