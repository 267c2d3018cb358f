// The call window: one card per call in #call-window, live from GET /api/v1/events (SSE).
// A card shows at once what the event carries (the number, the name, who it rings) and
// then fills in the rest from the API: the entity's source, its open deals, its last
// activities. What the API does not show this person (404) stays out of the card.

import { h, mount } from './lib/dom.js';
import { t, fmt } from './lib/i18n.js';
import { api } from './lib/api.js';
import { phone, notify } from './lib/ui.js';
import { userNames, userName, parseRef, entityHref, PLURAL, noteForm, decisionDetails } from './lib/crm.js';

const EVENTS = ['ringing', 'answered', 'ended'];
const MAX_BACKOFF = 30000;

export function start(ctx) {
  const cards = new Map(); // SIP Call-ID → card state
  const closed = new Set(); // calls whose card was closed: their later events stay out
  let source = null;
  let stopped = false;
  let timer = null;
  let backoff = 1000;
  let people = new Map();
  userNames().then((names) => { people = names; }).catch(() => {});

  const bell = notificationButton();

  function windowEl() {
    return document.getElementById('call-window');
  }

  function connect() {
    if (stopped) return;
    source = new EventSource('/api/v1/events', { withCredentials: true });
    source.onopen = () => { backoff = 1000; };
    for (const name of EVENTS) {
      source.addEventListener(name, (event) => {
        try { update(JSON.parse(event.data)); } catch { /* a malformed event is skipped */ }
        window.dispatchEvent(new CustomEvent('leadline:call'));
      });
    }
    // Pages that show presence or a queue follow the stream without a connection of
    // their own.
    source.addEventListener('presence', (event) => {
      try { window.dispatchEvent(new CustomEvent('leadline:presence', { detail: JSON.parse(event.data) })); } catch { /* skipped */ }
    });
    source.addEventListener('lagged', () => {
      // Events were lost: the cards may be behind; each one re-reads its call.
      for (const card of cards.values()) refreshCall(card);
    });
    source.onerror = () => {
      if (stopped) return;
      source.close();
      source = null;
      // Ask whether the session is still there: a 401 signs the console out (and stops us).
      api.get('/session').catch(() => {});
      timer = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF);
    };
  }

  function update(u) {
    if (closed.has(u.call_id)) return;
    let card = cards.get(u.call_id);
    if (!card) {
      if (u.event !== 'ringing' && u.event !== 'answered' && u.event !== 'ended') return;
      card = createCard(u);
      cards.set(u.call_id, card);
      const area = windowEl();
      if (area) area.prepend(card.el);
      if (u.event === 'ringing') raiseNotification(u);
    }
    card.u = { ...card.u, ...Object.fromEntries(Object.entries(u).filter(([, v]) => v !== null && v !== undefined)) };
    if (u.event === 'answered') card.answeredAt = u.at;
    if (u.event === 'ringing' && !card.startedAt) card.startedAt = u.at;
    if (u.event === 'ended') {
      card.endedAt = u.at;
      card.state = u.outcome === 'answered' || card.answeredAt ? 'ended' : 'missed';
    } else if (card.state !== 'ended' && card.state !== 'missed') {
      card.state = u.event;
    }
    if (u.call) card.el.dataset.call = u.call;
    card.el.dataset.state = card.state;
    renderState(card);
    if (u.entity && u.entity !== card.entity) loadEntity(card, u.entity, u.name);
    if (u.call && !card.callLoaded) refreshCall(card);
    if (u.event === 'ended') refreshCall(card);
  }

  function createCard(u) {
    const card = {
      u,
      state: u.event,
      entity: null,
      callLoaded: false,
      el: h('article', { class: 'call-card', dataset: { call: u.call || u.call_id, state: u.event }, 'aria-label': t('callwin.card_label', { number: u.customer }) }),
      parts: {},
    };
    const p = card.parts;
    p.state = h('p', { class: 'call-card__state' });
    p.name = h('p', { class: 'call-card__name' }, u.name || t('callwin.unknown'));
    p.number = h('p', { class: 'call-card__number' }, u.customer ? phone(u.customer, { from: u.number }) : t('callwin.hidden_number'));
    p.facts = h('dl', { class: 'facts call-card__facts' });
    p.deals = h('div', { class: 'call-card__deals' });
    p.recent = h('div', { class: 'call-card__recent' });
    p.offer = h('div', { class: 'call-card__offer' });
    p.note = h('div', { class: 'call-card__note' });
    p.decision = h('div', { class: 'call-card__decision' });
    p.link = h('p', { class: 'call-card__link' });
    const close = h('button', {
      type: 'button',
      class: 'btn small call-card__close',
      'aria-label': t('callwin.close_label', { number: u.customer }),
      on: { click: () => { card.el.remove(); cards.delete(card.u.call_id); closed.add(card.u.call_id); } },
    }, t('callwin.close'));
    mount(card.el,
      h('header', { class: 'call-card__head' }, p.state, close),
      p.name, p.number, p.facts, p.link, p.offer, p.decision, p.deals, p.recent, p.note);
    renderFacts(card, null);
    return card;
  }

  function renderState(card) {
    const u = card.u;
    let text;
    if (card.state === 'ringing') {
      const who = (u.ringing || []).map((id) => userName(people, id)).join(', ');
      text = t('callwin.ringing_on', { number: u.number }) + (who ? ' · ' + t('callwin.ringing_who', { who }) : '');
    } else if (card.state === 'answered') {
      text = t('callwin.answered_by', { who: userName(people, u.answered_by) });
    } else {
      const seconds = card.duration ?? (card.answeredAt && card.endedAt
        ? (Date.parse(card.endedAt) - Date.parse(card.answeredAt)) / 1000 : null);
      text = card.state === 'missed'
        ? t('callwin.missed', { number: u.number })
        : t('callwin.ended_after', { duration: fmt.duration(seconds ?? 0) });
    }
    card.parts.state.textContent = text;
    if (card.state === 'ended' || card.state === 'missed') renderNote(card);
  }

  function renderFacts(card, entity) {
    const u = card.u;
    const pairs = [
      ['callwin.responsible', userName(people, entity ? entity.responsible : u.responsible)],
      entity ? ['callwin.source', entity.source] : null,
      entity && entity.status ? ['callwin.status', t(`crm.status_${entity.status}`)] : null,
    ].filter(Boolean);
    mount(card.parts.facts, pairs.map(([k, v]) => [h('dt', {}, t(k)), h('dd', {}, v)]));
  }

  async function loadEntity(card, ref, name) {
    card.entity = ref;
    const { kind, id } = parseRef(ref);
    mount(card.parts.link, h('a', { class: 'call-card__entity', href: entityHref(ref) }, t('callwin.open_' + kind)));
    if (name) card.parts.name.textContent = name;
    mount(card.parts.offer);
    let entity;
    try {
      entity = await api.get(`/${PLURAL[kind]}/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err.status === 404) {
        // Not this person's to see: the number is all the card shows.
        card.parts.name.textContent = t('callwin.unknown');
        mount(card.parts.link);
        renderFacts(card, null);
      }
      return;
    }
    if (card.entity !== ref) return;
    card.parts.name.textContent = entity.name;
    renderFacts(card, entity);
    const dealQuery = kind === 'contact' ? { contact: id } : kind === 'company' ? { company: id } : null;
    const [deals, recent] = await Promise.all([
      dealQuery ? api.get('/deals', { ...dealQuery, status: 'open', limit: 5 }).catch(() => null) : null,
      api.get('/activities', { entity: ref, limit: 3 }).catch(() => null),
    ]);
    if (card.entity !== ref) return;
    if (deals && deals.items.length) {
      mount(card.parts.deals, h('h3', {}, t('callwin.open_deals')),
        h('ul', {}, deals.items.map((d) => h('li', {}, h('a', { href: entityHref('deal:' + d.id) }, d.name)))));
    }
    if (recent && recent.items.length) {
      mount(card.parts.recent, h('h3', {}, t('callwin.recent')),
        h('ul', {}, recent.items.map((a) => h('li', {},
          h('time', { datetime: a.created_at }, fmt.dateTime(a.created_at)), ' · ', a.subject))));
    }
  }

  async function refreshCall(card) {
    const id = card.u.call;
    if (!id) return;
    let call;
    try {
      call = await api.get(`/calls/${encodeURIComponent(id)}`);
    } catch {
      return;
    }
    card.callLoaded = true;
    card.call = call;
    if (call.duration_s != null && call.outcome) card.duration = call.duration_s;
    mount(card.parts.decision, decisionDetails(call.decision));
    // T4 manual mode: nothing was created yet; the agent decides.
    if (call.crm_action === 'offered' && !card.entity) renderOffer(card);
    const created = call.created && call.created[0];
    if (!card.entity && created) loadEntity(card, created);
    if (card.state === 'ended' || card.state === 'missed') renderState(card);
  }

  function renderOffer(card) {
    const make = (kind) => h('button', {
      type: 'button',
      class: 'btn small',
      dataset: { create: kind },
      on: {
        click: async (event) => {
          event.target.disabled = true;
          try {
            const result = await api.post(`/calls/${encodeURIComponent(card.u.call)}/create-entity`, { kind });
            notify(t('callwin.created_' + kind));
            loadEntity(card, result.created);
            if (result.call) card.call = result.call;
          } catch (err) {
            notify(err.message, 'error');
            event.target.disabled = false;
          }
        },
      },
    }, t('callwin.create_' + kind));
    mount(card.parts.offer, h('p', { class: 'muted' }, t('callwin.offer')), h('div', { class: 'form-actions' }, make('lead'), make('contact')));
  }

  function renderNote(card) {
    const activity = card.call && (typeof card.call.activity === 'object' && card.call.activity
      ? card.call.activity.id : card.call.activity);
    if (!activity || card.noteFor === activity) return;
    card.noteFor = activity;
    const current = typeof card.call.activity === 'object' ? card.call.activity.note : null;
    mount(card.parts.note, noteForm(activity, current));
  }

  function raiseNotification(u) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    try {
      const n = new Notification(t('callwin.notify_title'), {
        body: `${u.name || t('callwin.unknown')} · ${u.customer}`,
        tag: u.call_id,
      });
      n.onclick = () => { window.focus(); n.close(); };
    } catch { /* some browsers allow notifications only from a service worker */ }
  }

  function notificationButton() {
    if (!('Notification' in window) || Notification.permission !== 'default') return null;
    const who = document.querySelector('.who');
    if (!who) return null;
    const button = h('button', {
      type: 'button',
      class: 'btn',
      id: 'notify-calls',
      on: {
        click: async () => {
          try { await Notification.requestPermission(); } catch { /* refused */ }
          button.remove();
        },
      },
    }, t('callwin.enable_notifications'));
    who.prepend(button);
    return button;
  }

  connect();
  // Calls that are ringing or talking now, for a window opened mid-call.
  api.get('/calls', { limit: 20 }).then((page) => {
    for (const call of page.items) {
      if (!call.live || cards.has(call.call_id)) continue;
      update({
        event: call.answered_at ? 'answered' : 'ringing',
        call: call.id,
        call_id: call.call_id,
        direction: call.direction,
        customer: call.customer || call.from,
        number: call.number || call.to,
        entity: call.created && call.created[0] ? call.created[0] : null,
        responsible: call.responsible,
        ringing: call.legs.filter((l) => l.state === 'ringing').map((l) => l.user),
        answered_by: call.answered_by,
        at: call.answered_at || call.started_at,
      });
    }
  }).catch(() => {});

  return function stop() {
    stopped = true;
    if (timer) clearTimeout(timer);
    if (source) source.close();
    source = null;
    if (bell) bell.remove();
    for (const card of cards.values()) card.el.remove();
    cards.clear();
  };
}
