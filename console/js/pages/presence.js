// Presence: the control that sets one person's status (available / paused with a reason /
// offline), the signed-in person's own in the top bar, and the admins' board of everyone's
// presence (#/presence). Both follow the event stream's `presence` events, which the call
// window passes on as the window event `leadline:presence`.

import { h, mount, uid } from '../lib/dom.js';
import { t, fmt } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { pageHeader, notify, badge } from '../lib/ui.js';
import { table, when } from './admin-kit.js';

export const STATUSES = ['available', 'paused', 'offline'];
const KIND = { available: 'ok', paused: 'warn', offline: 'muted' };
/** How often open views re-read what no event announces (a call starting, wrap-up ending). */
export const POLL_MS = 4000;

export function statusBadge(status) {
  return badge(t('presence.' + status), KIND[status] || 'muted');
}

/**
 * The status select, and for a pause the reason and a button; `done(item)` gets the API's
 * answer. Available and offline apply at once, a pause once its reason is confirmed.
 */
export function presenceControl(user, current, { done, compact, name, showReason } = {}) {
  const selectId = uid('presence');
  const reasonId = uid('presence-reason');
  const label = name ? t('presence.of', { name }) : t('presence.mine');
  const select = h('select', { id: selectId, name: 'status', class: 'presence-select', dataset: { status: current.status } },
    STATUSES.map((s) => h('option', { value: s, selected: s === current.status }, t('presence.' + s))));
  const reason = h('input', {
    id: reasonId, name: 'reason', type: 'text', maxlength: 200, value: current.reason || '',
    placeholder: t('presence.reason_placeholder'),
  });
  const reasonLabel = h('label', { for: reasonId, class: compact ? 'sr-only' : null }, t('presence.reason'));
  const pause = h('button', { type: 'submit', class: 'btn small' }, t('presence.pause'));
  const pauseRow = h('span', { class: 'presence-pause' }, reasonLabel, reason, pause);
  const error = h('span', { class: 'field-error', role: 'alert', hidden: true });
  const shownReason = h('span', { class: 'presence-reason muted' });
  const el = h('form', { class: ['presence-form', compact ? 'compact' : null], dataset: { user }, novalidate: true },
    h('label', { for: selectId, class: compact ? 'sr-only' : null }, label), select, shownReason, pauseRow, error);

  // The reason is asked for while a pause is being chosen; once paused, it is shown.
  function showPause() {
    const paused = select.dataset.status === 'paused';
    pauseRow.hidden = select.value !== 'paused' || paused;
    shownReason.textContent = paused && select.value === 'paused' && reason.value && showReason ? reason.value : '';
  }
  async function apply() {
    error.hidden = true;
    select.disabled = true;
    pause.disabled = true;
    try {
      const body = { status: select.value };
      if (select.value === 'paused') body.reason = reason.value.trim() || null;
      const item = await api.put(`/users/${encodeURIComponent(user)}/presence`, body);
      select.dataset.status = item.status;
      reason.value = item.reason || '';
      showPause();
      notify(t('presence.set', { status: t('presence.' + item.status) }));
      if (done) done(item);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      (err.field === 'reason' ? reason : select).focus();
    } finally {
      select.disabled = false;
      pause.disabled = false;
    }
  }
  select.addEventListener('change', () => {
    showPause();
    if (select.value === 'paused') reason.focus();
    else apply();
  });
  el.addEventListener('submit', (event) => { event.preventDefault(); apply(); });
  showPause();
  return el;
}

/** The signed-in person's own presence in the top bar; returns a function that stops it. */
export function myPresence(slot, ctx) {
  const me = ctx.user.id;
  let current = { status: 'available', reason: null };
  function render() {
    mount(slot, h('span', { class: ['presence-dot', current.status], 'aria-hidden': 'true' }),
      presenceControl(me, current, { compact: true, showReason: true, done: (item) => { current = item; render(); } }));
  }
  const onEvent = (event) => {
    if (event.detail.user !== me) return;
    current = event.detail;
    render();
  };
  window.addEventListener('leadline:presence', onEvent);
  api.get('/presence').then((list) => {
    const mine = list.items.find((p) => p.user === me);
    if (mine) { current = mine; render(); }
  }).catch(() => {});
  render();
  return () => window.removeEventListener('leadline:presence', onEvent);
}

/**
 * Runs `refresh` every POLL_MS and at every event named in `events`, while `el` is on the
 * page: leaving the page stops it.
 */
export function whileShown(el, refresh, events = ['leadline:presence']) {
  let ticks = 0;
  let timer = null;
  function stop() {
    clearInterval(timer);
    events.forEach((e) => window.removeEventListener(e, tick));
  }
  function tick() {
    ticks += 1;
    if (el.isConnected) el.dataset.shown = '1';
    // Gone after being shown, or never shown (the person navigated on at once).
    else if (el.dataset.shown || ticks > 3) { stop(); return; }
    // Not while someone is choosing in it: the re-render would take their choice away.
    if (el.contains(document.activeElement) && document.activeElement.closest('form')) return;
    refresh();
  }
  timer = setInterval(tick, POLL_MS);
  events.forEach((e) => window.addEventListener(e, tick));
}

/** Whether a person is in a call or in wrap-up, as a badge (or nothing). */
export function busyBadge(p) {
  if (p.in_call) return badge(t('presence.in_call'), 'bad');
  if (p.wrap_up_until) return badge(t('presence.wrap_up_until', { time: fmt.time(p.wrap_up_until) }), 'warn');
  return null;
}

export default async function presenceBoard(page) {
  const people = (await api.get('/users', { limit: 500 })).items;
  const byId = Object.fromEntries(people.map((p) => [p.id, p]));
  const board = h('div', { class: 'presence-board' });
  async function render() {
    const list = await api.get('/presence');
    mount(board, table([
      { label: 'presence.person', render: (p) => h('span', {}, byId[p.user]?.name || p.user, byId[p.user]?.extension ? h('span', { class: 'muted' }, ` · ${byId[p.user].extension}`) : null) },
      { label: 'presence.status', render: (p) => h('span', { class: 'presence-now' }, statusBadge(p.status), ' ', busyBadge(p)) },
      { label: 'presence.reason', render: (p) => p.reason || '—' },
      { label: 'presence.since', render: (p) => when(p.since) },
      { label: 'presence.devices', render: (p) => String(p.devices) },
      { label: 'presence.change', render: (p) => presenceControl(p.user, p, { compact: true, name: byId[p.user]?.name || p.user, done: render }) },
    ], list.items, { caption: 'presence.title' }));
  }
  await render();
  whileShown(board, () => render().catch(() => {}));
  mount(page, pageHeader('presence.title'), h('p', { class: 'help' }, t('presence.lede')), board);
}
