// What the agent's pages share: employee names, links to CRM entities, a call's and an
// e-mail's few facts, and the timeline of one entity. Everything comes from the API as
// the signed-in person may see it.

import { h, mount, uid } from './dom.js';
import { t, fmt } from './i18n.js';
import { api } from './api.js';
import { phone, badge, notify } from './ui.js';
import { showError } from './form.js';

/** "lead" → the hash path segment of its pages. */
export const PLURAL = { lead: 'leads', contact: 'contacts', company: 'companies', deal: 'deals' };

let people = null;
/** Every employee's name by user id (one request per session, cached). */
export function userNames() {
  if (!people) {
    people = (async () => {
      const names = new Map();
      let cursor;
      do {
        const page = await api.get('/users', { limit: 500, cursor });
        for (const u of page.items) names.set(u.id, u.name);
        cursor = page.next;
      } while (cursor);
      return names;
    })().catch((err) => { people = null; throw err; });
  }
  return people;
}

export function forgetUserNames() {
  people = null;
}

/** A user id as its name ("—" when none, the id when unknown). */
export function userName(names, id) {
  if (!id) return '—';
  return names.get(id) || id;
}

/** "lead:0190…" → {kind, id}. */
export function parseRef(ref) {
  const i = ref.indexOf(':');
  return { kind: ref.slice(0, i), id: ref.slice(i + 1) };
}

export function entityHref(ref) {
  const { kind, id } = parseRef(ref);
  return `#/${PLURAL[kind] || kind}/${encodeURIComponent(id)}`;
}

/** A link to an entity, named when `name` is known, else by its kind. */
export function entityLink(ref, name, className) {
  const { kind } = parseRef(ref);
  return h('a', { href: entityHref(ref), class: className || null }, name || t('crm.kind_' + kind));
}

const names = new Map();
/** An entity's name, asked once; null when the API does not show it to this person. */
export async function entityName(ref) {
  if (!names.has(ref)) {
    const { kind, id } = parseRef(ref);
    names.set(ref, api.get(`/${PLURAL[kind]}/${encodeURIComponent(id)}`, null)
      .then((e) => e.name).catch(() => null));
  }
  return names.get(ref);
}

/** Links to the entities of an activity or call, filled with their names when they load. */
export function entityLinks(refs) {
  const span = h('span', { class: 'entity-links' });
  (refs || []).forEach((ref, i) => {
    const link = entityLink(ref);
    span.append(i ? ', ' : '', link);
    entityName(ref).then((name) => { if (name) link.textContent = name; });
  });
  return span;
}

const OUTCOME_KIND = { answered: 'ok', missed: 'bad', busy: 'warn', failed: 'bad', cancelled: 'muted' };
export function outcomeBadge(outcome) {
  if (!outcome) return badge(t('calls.live'), 'warn');
  return badge(t('calls.outcome_' + outcome), OUTCOME_KIND[outcome] || 'muted');
}

/** An audio player for a recording or voicemail (same origin, cookie-authenticated). */
export function player(src, label) {
  return h('audio', { controls: true, preload: 'none', src, 'aria-label': label || t('calls.recording') });
}

/** A small form that saves an activity's note. */
export function noteForm(activityId, note, onSaved) {
  const id = uid('note');
  const area = h('textarea', { id, name: 'note', rows: 2, maxlength: 10000 }, note || '');
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const el = h('form', { class: 'note-form', dataset: { activity: activityId } },
    error,
    h('label', { for: id }, t('crm.note')),
    area,
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'btn small' }, t('crm.save_note'))));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    const value = area.value.trim();
    try {
      await api.patch(`/activities/${encodeURIComponent(activityId)}`, { note: value === '' ? null : value });
      notify(t('crm.note_saved'));
      if (onSaved) onSaved(value);
    } catch (err) {
      showError(el, err);
    }
  });
  return el;
}

/** A call's direction, who, outcome and duration, as one line of facts. */
export function callSummary(call, who) {
  return h('p', { class: 'call-line' },
    outcomeBadge(call.outcome), ' ',
    call.duration_s != null ? h('span', {}, t('calls.duration_is', { duration: fmt.duration(call.duration_s) }), ' · ') : null,
    call.customer ? phone(call.customer, { from: call.number }) : null,
    who ? h('span', {}, ' · ', who) : null);
}

/**
 * Why the intake did what it did (the API's decision record), folded: the outcome in the
 * summary; the identifiers tried, each candidate and why, and the rules inside.
 */
export function decisionDetails(decision) {
  if (!decision) return null;
  const candidates = decision.candidates || [];
  const summary = h('summary', {}, t('decision.summary', { outcome: decision.outcome }));
  // The outcome names entities as kind:id; once their names load, it reads with names.
  let outcome = decision.outcome || '';
  for (const ref of outcome.match(/\b(?:lead|contact|company|deal):[0-9a-f-]{8,}/g) || []) {
    entityName(ref).then((name) => {
      if (!name) return;
      outcome = outcome.replace(ref, `${name} (${t('crm.kind_' + parseRef(ref).kind)})`);
      summary.textContent = t('decision.summary', { outcome });
    });
  }
  return h('details', { class: 'decision' },
    summary,
    h('dl', { class: 'facts decision__facts' },
      h('dt', {}, t('decision.identifiers')),
      h('dd', {}, (decision.identifiers || []).map((id) => h('code', {}, id)).flatMap((el, i) => (i ? [' ', el] : [el]))),
      h('dt', {}, t('decision.candidates')),
      h('dd', {}, candidates.length
        ? h('ul', { class: 'decision__candidates' }, candidates.map((c) => h('li', {},
          entityLinks([c.entity]), ': ', h('span', { class: 'muted' }, c.why))))
        : t('decision.no_candidates')),
      h('dt', {}, t('decision.rules')),
      h('dd', {}, (decision.rules || []).map((r) => h('span', { class: 'badge muted decision__rule', title: r }, r)).flatMap((el, i) => (i ? [' ', el] : [el])))));
}

function callItem(activity, call, people) {
  const who = call ? userName(people, call.answered_by || call.user) : null;
  return [
    h('p', { class: 'tl-title' }, h('strong', {}, t('crm.call')), ' ', activity.subject),
    call ? callSummary(call, call.answered_by || call.user ? who : null) : null,
    activity.recording ? player(activity.recording) : null,
    decisionDetails(activity.decision || (call && call.decision)),
    activity.note ? h('p', { class: 'tl-note' }, h('span', { class: 'muted' }, t('crm.note'), ': '), activity.note) : null,
    h('details', { class: 'tl-edit' }, h('summary', {}, t('crm.edit_note')), noteForm(activity.id, activity.note)),
  ];
}

function attachmentLinks(email) {
  if (!email.attachments || !email.attachments.length) return null;
  return h('ul', { class: 'attachments', 'aria-label': t('crm.attachments') },
    email.attachments.map((a, i) => h('li', {},
      h('a', { href: `/api/v1/emails/${encodeURIComponent(email.id)}/attachments/${i}`, download: a.name || true },
        a.name || t('crm.attachment_n', { n: i + 1 })),
      ' ', h('span', { class: 'muted' }, `(${fmtSize(a.size)})`))));
}

function fmtSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${fmt.number(Math.round(bytes / 102.4) / 10)} KB`;
  return `${fmt.number(Math.round(bytes / 104857.6) / 10)} MB`;
}

export function emailBlock(email) {
  return [
    h('p', { class: 'tl-meta' },
      h('span', { class: 'muted' }, t('crm.from'), ' '), email.from_name ? `${email.from_name} <${email.from}>` : email.from,
      h('span', { class: 'muted' }, ' · ', t('crm.to'), ' '), (email.to || []).join(', ')),
    attachmentLinks(email),
    h('p', {}, h('a', { href: `/api/v1/emails/${encodeURIComponent(email.id)}/raw` }, t('crm.raw_message'))),
  ];
}

function emailItem(activity, email) {
  return [
    h('p', { class: 'tl-title' }, h('strong', {}, t('crm.email')), ' ', email ? email.subject : activity.subject),
    email ? emailBlock(email) : null,
    decisionDetails(activity.decision || (email && email.decision)),
    activity.note ? h('p', { class: 'tl-note' }, h('span', { class: 'muted' }, t('crm.note'), ': '), activity.note) : null,
  ];
}

/** The call log row of an activity (an id or, where the API expands it, the call). */
export async function callOf(activity) {
  if (!activity.call) return null;
  if (typeof activity.call === 'object') return activity.call;
  try { return await api.get(`/calls/${encodeURIComponent(activity.call)}`); } catch { return null; }
}

/**
 * The timeline of an entity, newest first, a page at a time ("Show older").
 */
export function timeline(ref) {
  const list = h('ol', { class: 'timeline', dataset: { timeline: ref } });
  const status = h('p', { class: 'list-status', role: 'status' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, t('crm.older'));
  const box = h('div', {}, h('p', { class: 'form-error', role: 'alert', hidden: true }));
  let cursor = null;
  let emails = null;

  async function emailsById() {
    if (!emails) {
      emails = new Map();
      try {
        const page = await api.get('/emails', { entity: ref, limit: 500 });
        for (const e of page.items) if (e.activity) emails.set(e.activity, e);
      } catch { /* a timeline without the e-mails' details still shows their subjects */ }
    }
    return emails;
  }

  async function load() {
    status.textContent = t('common.loading');
    more.disabled = true;
    try {
      const [page, people] = await Promise.all([
        api.get('/activities', { entity: ref, limit: 20, cursor: cursor || undefined }),
        userNames().catch(() => new Map()),
      ]);
      const byActivity = page.items.some((a) => a.kind === 'email' && typeof a.email !== 'object') ? await emailsById() : new Map();
      const items = await Promise.all(page.items.map(async (a) => {
        let body;
        if (a.kind === 'call') body = callItem(a, await callOf(a), people);
        else body = emailItem(a, typeof a.email === 'object' && a.email ? a.email : byActivity.get(a.id));
        return h('li', { dataset: { activity: a.id, kind: a.kind } },
          h('p', { class: 'when' }, h('time', { datetime: a.created_at }, fmt.dateTime(a.created_at)),
            ' · ', t('calls.direction_' + a.direction),
            a.completed ? null : [' · ', badge(t('work.open'), 'warn')]),
          body);
      }));
      list.append(...items);
      cursor = page.next;
      more.hidden = !cursor;
      status.textContent = list.children.length ? '' : t('crm.timeline_empty');
    } catch (err) {
      status.textContent = '';
      showError(box, err);
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener('click', load);
  load();
  return h('div', { class: 'timeline-wrap' }, box, list, status, more);
}

/** Replaces `el`'s content with the options of a <select> built from a list. */
export function fillSelect(el, options, value) {
  mount(el, options.map((o) => h('option', { value: o.value, selected: String(o.value) === String(value ?? '') }, o.text)));
}
