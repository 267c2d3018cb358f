// The dashboard, everyone's home page: today's calls (as the API counts them for this
// person), and for admins who is online, the mail taken in, and what needs attention.

import { h, mount } from '../lib/dom.js';
import { t, fmt, lang } from '../lib/i18n.js';
import { api, url } from '../lib/api.js';
import { pageHeader, section, badge } from '../lib/ui.js';
import { all, table } from './admin-kit.js';
import { stateBadge } from './mailboxes.js';
import { registrationBadge } from './trunks.js';

/** Today from local midnight to the next, as the API's RFC 3339 bounds. */
function today() {
  const from = new Date();
  from.setHours(0, 0, 0, 0);
  const to = new Date(from);
  to.setDate(to.getDate() + 1);
  return { from: from.toISOString(), to: to.toISOString() };
}

/** The rows of a stats answer, whatever it wraps them in. */
function rows(answer) {
  if (!answer) return [];
  if (Array.isArray(answer)) return answer;
  return answer.items || [];
}

const num = (value) => fmt.number(Number(value) || 0);

function card(labelKey, value, { kind, href, detail } = {}) {
  const big = h('p', { class: ['stat', kind ? 'stat-' + kind : null] }, value);
  return h('div', { class: 'card stat-card' },
    h('h2', { class: 'stat-label' }, href ? h('a', { href }, t(labelKey)) : t(labelKey)),
    big,
    detail ? h('p', { class: 'muted' }, detail) : null);
}

const percent = new Intl.NumberFormat(lang === 'de' ? 'de-DE' : 'en-GB', { style: 'percent', maximumFractionDigits: 0 });

/** Seconds as m:ss; `null` (nothing to average) as a dash. */
const seconds = (value) => (value === null || value === undefined ? '—' : fmt.duration(Number(value)));

/**
 * A stats table: the group's name, answered, missed, abandoned, total, then the callers'
 * average and longest wait, the service level (answered within 20 s) and the average talk.
 */
function statsTable(items, labelKey, name) {
  return table([
    { label: labelKey, render: name },
    { label: 'dashboard.answered', render: (r) => num(r.answered) },
    { label: 'dashboard.missed', render: (r) => (Number(r.missed) ? badge(num(r.missed), 'bad') : num(0)) },
    { label: 'dashboard.abandoned', render: (r) => (Number(r.abandoned) ? badge(num(r.abandoned), 'warn') : num(0)) },
    { label: 'dashboard.total', render: (r) => num(r.offered) },
    { label: 'dashboard.avg_wait', render: (r) => seconds(r.avg_wait_s) },
    { label: 'dashboard.max_wait', render: (r) => seconds(r.max_wait_s) },
    { label: 'dashboard.service_level', render: (r) => (r.service_level === null || r.service_level === undefined ? '—' : percent.format(Number(r.service_level))) },
    { label: 'dashboard.avg_talk', render: (r) => seconds(r.avg_talk_s) },
  ], items, { empty: 'dashboard.no_calls' });
}

const safe = (promise) => promise.catch((err) => ({ failed: err }));

export default async function dashboardPage(page, params, ctx) {
  const isAdmin = ctx.user.role === 'admin';
  const day = today();
  const [byNumber, byQueue, queues, registrations, emails, mailboxes, trunks, people] = await Promise.all([
    safe(api.get('/stats/calls', { ...day, by: 'number' })),
    safe(api.get('/stats/calls', { ...day, by: 'queue' })),
    safe(all('/queues')),
    isAdmin ? safe(all('/registrations')) : null,
    isAdmin ? safe(api.get('/stats/emails', day)) : null,
    isAdmin ? safe(all('/mailboxes')) : null,
    isAdmin ? safe(all('/trunks')) : null,
    isAdmin ? safe(all('/users')) : null,
  ]);
  const failed = (x) => !x || x.failed;
  const person = failed(people) ? {} : Object.fromEntries(people.map((p) => [p.id, p.name]));
  const numberRows = failed(byNumber) ? [] : rows(byNumber);
  const queueRows = failed(byQueue) ? [] : rows(byQueue);
  const queueName = failed(queues) ? {} : Object.fromEntries(queues.map((q) => [q.id, q.name]));
  const sum = (key) => numberRows.reduce((n, r) => n + (Number(r[key]) || 0), 0);
  // Every incoming call on one of our numbers, once: the per-number rows add up to the day.
  const answered = sum('answered');
  const missed = sum('missed');
  const total = sum('offered');

  // Without the statistics the page says so instead of showing zeros.
  const noStats = failed(byNumber) || failed(byQueue);
  const shown = (n) => (noStats ? '—' : num(n));
  const cards = [
    card('dashboard.calls_today', shown(total)),
    card('dashboard.answered', shown(answered), { kind: 'ok' }),
    card('dashboard.missed', shown(missed), { kind: missed ? 'bad' : null }),
  ];
  let online = null;
  let brokenMail = [];
  let brokenTrunks = [];
  if (isAdmin) {
    if (!failed(registrations)) {
      online = registrations.filter((r) => r.user);
      const people = new Set(online.map((r) => r.user)).size;
      cards.push(card('dashboard.online', num(people), { href: '#/registrations', detail: t('dashboard.phones', { n: online.length }) }));
    }
    if (!failed(emails)) {
      const taken = Number(emails.ingested) || 0;
      cards.push(card('dashboard.emails_today', num(taken)));
    }
    if (!failed(mailboxes)) {
      brokenMail = mailboxes.filter((m) => m.state === 'error');
      cards.push(card('dashboard.mailboxes_error', num(brokenMail.length), { kind: brokenMail.length ? 'bad' : 'ok', href: '#/mailboxes' }));
    }
    if (!failed(trunks)) {
      brokenTrunks = trunks.filter((x) => x.registration && x.registration.state !== 'registered');
      cards.push(card('dashboard.trunks_down', num(brokenTrunks.length), { kind: brokenTrunks.length ? 'bad' : 'ok', href: '#/trunks' }));
    }
  }

  const chart = h('img', {
    class: 'chart',
    src: url('/stats/calls/chart.svg', day),
    alt: t('dashboard.chart_alt', { total, answered, missed }),
  });
  const problems = [];
  if (brokenMail.length) {
    problems.push(section('dashboard.mailboxes_error', table([
      { label: 'common.name', render: (m) => h('a', { href: `#/mailboxes/${m.id}` }, m.name) },
      { label: 'mailboxes.state', render: (m) => stateBadge(m.state) },
      { label: 'mailboxes.last_error', render: (m) => m.last_error || '—' },
    ], brokenMail)));
  }
  if (brokenTrunks.length) {
    problems.push(section('dashboard.trunks_down', table([
      { label: 'common.name', render: (x) => h('a', { href: `#/trunks/${x.id}` }, x.name) },
      { label: 'trunks.state', render: (x) => registrationBadge(x.registration) },
      { label: 'trunks.last_error', render: (x) => x.registration.last_error || '—' },
    ], brokenTrunks)));
  }
  const unavailable = noStats
    ? h('p', { class: 'form-error', role: 'alert' }, t('dashboard.stats_unavailable'), ' ', (byNumber.failed || byQueue.failed).message)
    : null;

  mount(page,
    pageHeader('dashboard.title'),
    h('p', { class: 'muted' }, isAdmin ? t('dashboard.lede_admin') : t('dashboard.lede_agent')),
    unavailable,
    h('div', { class: 'stat-grid' }, cards),
    noStats ? null : section('dashboard.chart', chart),
    problems,
    noStats ? null : h('div', { class: 'grid' },
      section('dashboard.by_number', statsTable(numberRows, 'numbers.number', (r) => r.key || '—')),
      section('dashboard.by_queue', statsTable(queueRows, 'numbers.queue', (r) => (r.key ? queueName[r.key] || r.key : t('dashboard.no_queue'))))),
    online ? section('dashboard.online', table([
      { label: 'registrations.who', render: (r) => person[r.user] || r.user },
      { label: 'registrations.aor', render: (r) => r.aor },
      { label: 'registrations.device', render: (r) => r.user_agent || '—' },
    ], online, { empty: 'registrations.none' })) : null);
}
