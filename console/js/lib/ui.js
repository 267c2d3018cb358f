// Small pieces every page uses: the page heading, notices, confirmations, a phone number
// with its click-to-call button.

import { h } from './dom.js';
import { t } from './i18n.js';
import { api } from './api.js';

/** The page's <h1>, which also gets the focus so a screen reader announces the new page. */
export function pageHeader(titleKey, ...actions) {
  const title = typeof titleKey === 'object' ? titleKey.text : t(titleKey);
  document.title = `${title} · ${t('app.name')}`;
  return h('header', { class: 'page-header' },
    h('h1', { tabindex: '-1', id: 'page-title' }, title),
    actions.length ? h('div', { class: 'page-actions' }, actions) : null);
}

let toastArea = null;
/** A short message in a polite live region ("Saved."). */
export function notify(text, kind = 'ok') {
  if (!toastArea) {
    toastArea = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(toastArea);
  }
  const toast = h('p', { class: ['toast', kind] }, text);
  toastArea.append(toast);
  setTimeout(() => toast.remove(), 5000);
}

export function confirmAction(messageKey, vars) {
  return window.confirm(t(messageKey, vars));
}

export function badge(text, kind) {
  return h('span', { class: ['badge', kind] }, text);
}

/** A section with a heading, for detail pages. */
export function section(titleKey, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, t(titleKey)), children);
}

/** key/value pairs as a description list. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([label, value]) =>
    [h('dt', {}, t(label)), h('dd', {}, value ?? '—')]));
}

/**
 * A phone number with a "Call" button: the person's own phone rings first, then the
 * customer is called through the number's trunk (click-to-call).
 */
export function phone(number, { from } = {}) {
  const button = h('button', {
    type: 'button',
    class: 'btn small call-btn',
    'aria-label': t('calls.call_number', { number }),
    on: {
      click: async () => {
        button.disabled = true;
        try {
          await api.post('/calls/dial', { to: number, number: from || null });
          notify(t('calls.dialing', { number }));
        } catch (err) {
          notify(err.message, 'error');
        } finally {
          button.disabled = false;
        }
      },
    },
  }, t('calls.call'));
  return h('span', { class: 'phone' }, h('a', { href: `tel:${number}` }, number), ' ', button);
}

export function loading() {
  return h('p', { class: 'loading', role: 'status' }, t('common.loading'));
}
