// A list page: search box, filters, a table and cursor paging, over one API list
// (`{items, next}`). What the list holds is what the API returned for this person: the
// access rules are the API's, not repeated here.

import { h, mount } from './dom.js';
import { t } from './i18n.js';
import { showError } from './form.js';

/**
 * listView({
 *   resource: 'contacts',
 *   columns: [{label: 'common.name', render: (item) => node|string}],
 *   load: async (query) => ({items, next}),      // query has q, filters, cursor, limit
 *   search: true,                                 // a search box sending `q`
 *   filters: [{name, label, options: [{value, label}]}],
 *   link: (item) => '#/contacts/' + item.id,     // the first column links there
 *   empty: 'common.nothing_found',
 *   pageSize: 50,
 * })
 */
export function listView({ resource, columns, load, search, filters = [], link, empty = 'common.nothing_found', pageSize = 50, caption }) {
  const state = { cursors: [null], page: 0, query: {} };
  const status = h('p', { class: 'list-status', role: 'status' });
  const tbody = h('tbody');
  const table = h('table', { class: 'list', dataset: { list: resource } },
    caption ? h('caption', { class: 'sr-only' }, t(caption)) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, t(c.label))))),
    tbody);
  const prev = h('button', { type: 'button', class: 'btn', disabled: true, on: { click: () => go(state.page - 1) } }, t('common.previous'));
  const next = h('button', { type: 'button', class: 'btn', disabled: true, on: { click: () => go(state.page + 1) } }, t('common.next'));
  const errorBox = h('div', {}, h('p', { class: 'form-error', role: 'alert', hidden: true }));

  const controls = h('form', { class: 'list-controls', role: 'search', on: { submit: (e) => { e.preventDefault(); apply(); } } },
    search ? searchField() : null,
    filters.map(filterField),
    h('button', { type: 'submit', class: 'btn' }, t('common.search')));

  function searchField() {
    const id = `${resource}-q`;
    return h('div', { class: 'field inline' },
      h('label', { for: id }, t('common.search_label')),
      h('input', { id, name: 'q', type: 'search', autocomplete: 'off' }));
  }

  function filterField(f) {
    const id = `${resource}-${f.name}`;
    return h('div', { class: 'field inline' },
      h('label', { for: id }, t(f.label)),
      f.type && f.type !== 'select'
        ? h('input', { id, name: f.name, type: f.type })
        : h('select', { id, name: f.name, on: { change: apply } },
          h('option', { value: '' }, t('common.all')),
          (f.options || []).map((o) => h('option', { value: o.value }, o.text ?? t(o.label)))));
  }

  function apply() {
    const query = {};
    for (const input of controls.querySelectorAll('input, select')) {
      if (input.type === 'checkbox') { if (input.checked) query[input.name] = 'true'; }
      else if (input.value) query[input.name] = input.value;
    }
    state.query = query;
    state.cursors = [null];
    go(0);
  }

  async function go(page) {
    state.page = page;
    status.textContent = t('common.loading');
    table.setAttribute('aria-busy', 'true');
    try {
      const result = await load({ ...state.query, cursor: state.cursors[page] || undefined, limit: pageSize });
      state.cursors[page + 1] = result.next || null;
      render(result.items || []);
      prev.disabled = page === 0;
      next.disabled = !result.next;
      status.textContent = result.items.length ? '' : t(empty);
    } catch (err) {
      status.textContent = '';
      showError(errorBox, err);
    } finally {
      table.removeAttribute('aria-busy');
    }
  }

  function render(items) {
    mount(tbody, items.map((item) => h('tr', { dataset: { id: item.id ?? '' } },
      columns.map((c, i) => {
        const value = c.render ? c.render(item) : item[c.key];
        const cell = i === 0 && link ? h('a', { href: link(item) }, value ?? '') : value;
        return i === 0 ? h('th', { scope: 'row' }, cell ?? '') : h('td', {}, cell ?? '');
      }))));
  }

  const view = h('section', { class: 'list-view' }, controls, errorBox, h('div', { class: 'table-wrap' }, table), status,
    h('nav', { class: 'pager', 'aria-label': t('common.pages') }, prev, next));
  view.reload = () => go(state.page);
  go(0);
  return view;
}
