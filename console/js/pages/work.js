// My work: the signed-in person's open tasks: calls to return (missed calls, voicemails)
// and e-mails to answer. Completing an e-mail marks it \Seen in its mailbox too.

import { h, mount } from '../lib/dom.js';
import { t, fmt } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { pageHeader, notify, section, badge, phone } from '../lib/ui.js';
import { entityLinks, callOf, player, emailBlock, outcomeBadge, userNames, userName } from '../lib/crm.js';

export default async function workPage(main) {
  const [page, people] = await Promise.all([
    api.get('/activities', { mine: 'true', completed: 'false', limit: 200 }),
    userNames().catch(() => new Map()),
  ]);
  const calls = page.items.filter((a) => a.kind === 'call');
  const emails = page.items.filter((a) => a.kind === 'email');
  const callItems = await Promise.all(calls.map(async (a) => item(a, await callOf(a), null, people)));
  const emailItems = await Promise.all(emails.map(async (a) => item(a, null, await emailOf(a), people)));
  mount(main,
    pageHeader('work.title'),
    h('p', { class: 'lede' }, t('work.lede')),
    section('work.callbacks', callItems.length
      ? h('ul', { class: 'work-list', dataset: { work: 'calls' } }, callItems)
      : h('p', { class: 'muted' }, t('work.no_callbacks'))),
    section('work.emails', emailItems.length
      ? h('ul', { class: 'work-list', dataset: { work: 'emails' } }, emailItems)
      : h('p', { class: 'muted' }, t('work.no_emails'))),
    page.next ? h('p', { class: 'muted' }, t('work.more')) : null);
}

async function emailOf(activity) {
  if (activity.email && typeof activity.email === 'object') return activity.email;
  if (typeof activity.email === 'string') {
    try { return await api.get(`/emails/${encodeURIComponent(activity.email)}`); } catch { return null; }
  }
  return null;
}

function item(activity, call, email, people) {
  const state = h('span', { class: 'work-state' }, badge(t('work.open'), 'warn'));
  const li = h('li', { class: 'work-item', dataset: { activity: activity.id, completed: 'false' } });
  const toggle = h('button', { type: 'button', class: 'btn primary', dataset: { action: 'complete' } }, t('work.complete'));
  toggle.addEventListener('click', async () => {
    const completed = li.dataset.completed !== 'true';
    toggle.disabled = true;
    try {
      await api.patch(`/activities/${encodeURIComponent(activity.id)}`, { completed });
      li.dataset.completed = String(completed);
      mount(state, completed ? badge(t('work.done'), 'ok') : badge(t('work.open'), 'warn'));
      toggle.textContent = completed ? t('work.reopen') : t('work.complete');
      toggle.dataset.action = completed ? 'reopen' : 'complete';
      toggle.className = completed ? 'btn' : 'btn primary';
      notify(completed ? t('work.completed') : t('work.reopened'));
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      toggle.disabled = false;
    }
  });
  const voicemail = call && call.voicemail;
  mount(li,
    h('div', { class: 'work-head' },
      h('h3', {}, voicemail ? t('work.voicemail') : activity.kind === 'call' ? t('work.missed_call') : (email ? email.subject : activity.subject)),
      state),
    h('p', { class: 'when' }, h('time', { datetime: activity.created_at }, fmt.dateTime(activity.created_at)),
      activity.entities && activity.entities.length ? [' · ', entityLinks(activity.entities)] : null),
    call ? h('p', {}, call.customer ? phone(call.customer, { from: call.number }) : call.from, ' ',
      outcomeBadge(call.outcome), ' ', h('span', { class: 'muted' }, t('work.on_number', { number: call.number || call.to })),
      call.responsible ? h('span', { class: 'muted' }, ' · ', t('work.responsible', { name: userName(people, call.responsible) })) : null) : null,
    activity.kind === 'call' && !call ? h('p', {}, activity.subject) : null,
    activity.recording ? player(activity.recording, voicemail ? t('work.voicemail') : t('calls.recording')) : null,
    email ? emailBlock(email) : null,
    h('div', { class: 'form-actions' }, toggle));
  return li;
}
