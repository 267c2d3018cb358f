// The call log: every call this person may see, newest first, with filters (mine,
// missed, outcome, our number, dates), the entity the call is on and its recording.

import { h, mount } from '../lib/dom.js';
import { t, fmt } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { listView } from '../lib/list.js';
import { pageHeader, phone, badge } from '../lib/ui.js';
import { userNames, userName, entityLinks, outcomeBadge, player } from '../lib/crm.js';

const OUTCOMES = ['answered', 'missed', 'busy', 'failed', 'cancelled'];

function entitiesOf(call) {
  if (Array.isArray(call.entities)) return call.entities;
  if (call.activity && typeof call.activity === 'object') return call.activity.entities || [];
  return call.created || [];
}

/** The date inputs give days; the API takes instants: the whole day in local time. */
function dayBounds(query) {
  const out = { ...query };
  if (query.from) out.from = new Date(`${query.from}T00:00:00`).toISOString();
  if (query.to) out.to = new Date(`${query.to}T23:59:59.999`).toISOString();
  return out;
}

export default async function callsPage(main) {
  const [people, numbers] = await Promise.all([
    userNames().catch(() => new Map()),
    api.get('/numbers', { limit: 500 }).then((r) => r.items).catch(() => []),
  ]);
  const recordingCell = (c) => {
    if (!c.recording) return null;
    const button = h('button', { type: 'button', class: 'btn small', 'aria-label': t('calls.play_label', { number: c.customer || c.from }) }, t('calls.play'));
    const cell = h('span', { class: 'recording-cell' }, button);
    button.addEventListener('click', () => {
      const audio = player(c.recording, c.voicemail ? t('work.voicemail') : t('calls.recording'));
      mount(cell, audio);
      audio.play().catch(() => {});
      audio.focus();
    });
    return cell;
  };
  const side = (c, value, isCustomer) => (isCustomer && c.customer ? phone(c.customer, { from: c.number }) : value);
  const list = listView({
    resource: 'calls',
    caption: 'calls.title',
    columns: [
      { label: 'calls.time', render: (c) => h('time', { datetime: c.started_at }, fmt.dateTime(c.started_at)) },
      { label: 'calls.direction', render: (c) => t('calls.direction_' + c.direction) },
      { label: 'calls.from', render: (c) => side(c, c.from, c.direction === 'incoming') },
      { label: 'calls.to', render: (c) => side(c, c.to, c.direction === 'outgoing') },
      { label: 'calls.number', render: (c) => c.number || '' },
      { label: 'calls.who', render: (c) => (c.answered_by || c.user ? userName(people, c.answered_by || c.user) : '—') },
      { label: 'calls.outcome', render: (c) => [outcomeBadge(c.live ? null : c.outcome), c.voicemail ? [' ', badge(t('work.voicemail'), 'muted')] : null] },
      { label: 'calls.duration', render: (c) => (c.duration_s != null ? fmt.duration(c.duration_s) : '') },
      { label: 'calls.entity', render: (c) => entityLinks(entitiesOf(c)) },
      { label: 'calls.recording', render: recordingCell },
    ],
    filters: [
      { name: 'mine', label: 'calls.mine', type: 'checkbox' },
      { name: 'missed', label: 'calls.missed_only', type: 'checkbox' },
      { name: 'outcome', label: 'calls.outcome', options: OUTCOMES.map((o) => ({ value: o, label: 'calls.outcome_' + o })) },
      { name: 'number', label: 'calls.number', options: numbers.map((n) => ({ value: n.number, text: n.number })) },
      { name: 'from', label: 'calls.date_from', type: 'date' },
      { name: 'to', label: 'calls.date_to', type: 'date' },
    ],
    load: (query) => api.get('/calls', dayBounds(query)),
  });
  mount(main, pageHeader('calls.title'), list);
}
