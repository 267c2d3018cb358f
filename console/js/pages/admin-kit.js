// Pieces the administration pages share: option lists from the API, a delete button,
// yes/no cells, a secret shown once with a copy hint, and a simple table.

import { h } from '../lib/dom.js';
import { t, fmt } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { notify, confirmAction, badge } from '../lib/ui.js';

/** Every item of a paged list (small admin lists: trunks, queues, people). */
export async function all(path, query = {}) {
  const items = [];
  let cursor;
  for (let i = 0; i < 20; i += 1) {
    const page = await api.get(path, { ...query, limit: 200, cursor });
    items.push(...(page.items || []));
    if (!page.next) break;
    cursor = page.next;
  }
  return items;
}

/** Select options from a list of objects, with an optional "none" entry first. */
export function choices(items, label, none) {
  const list = items.map((item) => ({ value: item.id, label: { text: label(item) } }));
  return none ? [{ value: '', label: none }, ...list] : list;
}

/** Options for an enum whose labels are `${prefix}.${value}` in the catalogue. */
export function enumChoices(prefix, values) {
  return values.map((value) => ({ value, label: `${prefix}.${value}` }));
}

export function yesNo(value) {
  return value ? t('common.yes') : t('common.no');
}

/** "set" / "not set" for a write-only secret. */
export function secretState(isSet) {
  return isSet ? badge(t('admin.secret_set'), 'ok') : badge(t('admin.secret_not_set'), 'muted');
}

/** A delete button asking first; `done` runs after the API answered. */
export function deleteButton({ path, confirmKey, vars, done, label = 'common.delete', small }) {
  const button = h('button', {
    type: 'button',
    class: ['btn', 'danger', small ? 'small' : null],
    on: {
      click: async () => {
        if (!confirmAction(confirmKey, vars)) return;
        button.disabled = true;
        try {
          await api.del(path);
          notify(t('common.deleted'));
          done();
        } catch (err) {
          notify(err.message, 'error');
        } finally {
          button.disabled = false;
        }
      },
    },
  }, t(label));
  return button;
}

/** A token or secret the API shows this once, with a copy button and the hint to keep it. */
export function shownOnce(value, hintKey = 'admin.shown_once') {
  const id = 'once-' + Math.random().toString(36).slice(2);
  const input = h('input', { id, type: 'text', readonly: true, value, class: 'mono', 'aria-describedby': id + '-hint' });
  const copy = h('button', {
    type: 'button',
    class: 'btn',
    on: {
      click: async () => {
        input.select();
        try {
          await navigator.clipboard.writeText(value);
          notify(t('admin.copied'));
        } catch {
          notify(t('admin.copy_by_hand'));
        }
      },
    },
  }, t('admin.copy'));
  return h('div', { class: 'once', role: 'status' },
    h('label', { for: id }, t('admin.new_secret')),
    h('div', { class: 'once-row' }, input, copy),
    h('p', { class: 'help', id: id + '-hint' }, t(hintKey)));
}

/** A plain table: columns [{label, render}], rows of data. */
export function table(columns, rows, { caption, empty = 'common.nothing_found' } = {}) {
  if (!rows.length) return h('p', { class: 'muted' }, t(empty));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
    caption ? h('caption', { class: 'sr-only' }, t(caption)) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, t(c.label))))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c, i) => {
      const value = c.render(row);
      return i === 0 ? h('th', { scope: 'row' }, value ?? '') : h('td', {}, value ?? '');
    }))))));
}

export function when(iso) {
  return iso ? fmt.dateTime(iso) : '—';
}
