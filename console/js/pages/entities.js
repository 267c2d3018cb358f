// Leads, contacts, companies and deals: one list page and one detail page for each kind,
// with the create and edit forms, lead conversion, a deal's stage, and the timeline.

import { h, mount } from '../lib/dom.js';
import { t, fmt } from '../lib/i18n.js';
import { api } from '../lib/api.js';
import { form } from '../lib/form.js';
import { listView } from '../lib/list.js';
import { pageHeader, notify, confirmAction, badge, section, facts, phone } from '../lib/ui.js';
import { PLURAL, userNames, userName, entityLink, entityName, timeline } from '../lib/crm.js';

const STATUSES = {
  lead: ['new', 'converted', 'junk'],
  deal: ['open', 'won', 'lost'],
};
const STATUS_KIND = { new: 'warn', converted: 'ok', junk: 'muted', open: 'warn', won: 'ok', lost: 'bad' };

/** The page function of one kind, for routes.js. */
export function page(kind) {
  return (main, params, ctx) => (params.id ? detail(main, kind, params.id, ctx) : listPage(main, kind, ctx));
}

export default page('lead');

function statusBadge(status) {
  return status ? badge(t('crm.status_' + status), STATUS_KIND[status]) : null;
}

function phones(list) {
  if (!list || !list.length) return null;
  return h('span', { class: 'phones' }, list.map((n, i) => [i ? h('br') : null, phone(n)]));
}

function mails(list) {
  if (!list || !list.length) return null;
  return h('span', {}, list.map((m, i) => [i ? h('br') : null, h('a', { href: `mailto:${m}` }, m)]));
}

/** Everything the forms offer to choose from, read once per page. */
async function choices(kind) {
  const [people, sources, pipelines, companies, contacts] = await Promise.all([
    userNames().catch(() => new Map()),
    api.get('/sources').then((r) => r.items || r).catch(() => []),
    kind === 'deal' ? api.get('/pipelines').then((r) => r.items || r).catch(() => []) : [],
    kind === 'contact' || kind === 'deal' ? api.get('/companies', { limit: 500 }).then((r) => r.items).catch(() => []) : [],
    kind === 'deal' ? api.get('/contacts', { limit: 500 }).then((r) => r.items).catch(() => []) : [],
  ]);
  return { people, sources, pipelines, companies, contacts };
}

function peopleOptions(people, empty) {
  return [{ value: '', label: empty }, ...[...people].map(([id, name]) => ({ value: id, label: { text: name } }))];
}

function fields(kind, c, entity) {
  const editing = !!entity;
  const list = [{ name: 'name', label: 'common.name', required: true, value: entity?.name }];
  if (kind !== 'deal') {
    list.push({ name: 'phones', type: 'list', label: 'crm.phones', help: 'crm.phones_help', value: entity?.phones });
    list.push({ name: 'emails', type: 'list', label: 'crm.emails', help: 'crm.emails_help', value: entity?.emails });
  }
  if (kind === 'lead' && editing && entity.status !== 'converted') {
    list.push({ name: 'status', type: 'select', label: 'crm.status', value: entity.status,
      options: [{ value: 'new', label: 'crm.status_new' }, { value: 'junk', label: 'crm.status_junk' }] });
  }
  if (kind === 'contact' || (kind === 'deal' && !editing)) {
    list.push({ name: 'company', type: 'select', label: 'crm.company', value: entity?.company, empty: editing ? 'null' : 'omit',
      options: [{ value: '', label: 'crm.none' }, ...c.companies.map((co) => ({ value: co.id, label: { text: co.name } }))] });
  }
  if (kind === 'deal' && !editing) {
    list.push({ name: 'contact', type: 'select', label: 'crm.contact',
      options: [{ value: '', label: 'crm.none' }, ...c.contacts.map((co) => ({ value: co.id, label: { text: co.name } }))] });
    if (c.pipelines.length > 1) {
      list.push({ name: 'pipeline', type: 'select', label: 'crm.pipeline',
        options: [{ value: '', label: 'crm.default_pipeline' }, ...c.pipelines.map((p) => ({ value: p.id, label: { text: p.name } }))] });
    }
  }
  list.push({ name: 'responsible', type: 'select', label: 'crm.responsible', value: entity ? entity.responsible : '',
    empty: editing ? 'null' : 'omit', options: peopleOptions(c.people, editing ? 'crm.nobody' : 'crm.me') });
  if (c.sources.length) {
    list.push({ name: 'source', type: 'select', label: 'crm.source', value: entity?.source || 'OTHER',
      options: c.sources.map((s) => ({ value: s.code, label: { text: s.name ? `${s.name} (${s.code})` : s.code } })) });
  }
  return list;
}

async function listPage(main, kind) {
  const c = await choices(kind);
  const filters = [];
  if (STATUSES[kind]) {
    filters.push({ name: 'status', label: 'crm.status', options: STATUSES[kind].map((s) => ({ value: s, label: 'crm.status_' + s })) });
  }
  const stageNames = new Map();
  if (kind === 'deal') {
    for (const p of c.pipelines) for (const s of p.stages) stageNames.set(s.id, s.name);
    if (c.pipelines.length > 1) filters.push({ name: 'pipeline', label: 'crm.pipeline', options: c.pipelines.map((p) => ({ value: p.id, text: p.name })) });
    filters.push({ name: 'stage', label: 'crm.stage', options: c.pipelines.flatMap((p) => p.stages.map((s) => ({ value: s.id, text: c.pipelines.length > 1 ? `${p.name} · ${s.name}` : s.name }))) });
  }
  filters.push({ name: 'responsible', label: 'crm.responsible', options: [...c.people].map(([id, name]) => ({ value: id, text: name })) });
  const columns = [{ label: 'common.name', render: (e) => e.name }];
  if (kind === 'deal') {
    columns.push({ label: 'crm.stage', render: (e) => stageNames.get(e.stage) || e.stage });
    columns.push({ label: 'crm.customer', render: (e) => (e.contact ? namedLink('contact:' + e.contact) : e.company ? namedLink('company:' + e.company) : null) });
  } else {
    columns.push({ label: 'crm.phones', render: (e) => phones(e.phones) });
    columns.push({ label: 'crm.emails', render: (e) => mails(e.emails) });
  }
  if (STATUSES[kind]) columns.push({ label: 'crm.status', render: (e) => statusBadge(e.status) });
  columns.push({ label: 'crm.responsible', render: (e) => userName(c.people, e.responsible) });
  columns.push({ label: 'crm.source', render: (e) => e.source });
  columns.push({ label: 'crm.created', render: (e) => h('time', { datetime: e.created_at }, fmt.date(e.created_at)) });

  const list = listView({
    resource: PLURAL[kind],
    caption: `crm.${PLURAL[kind]}`,
    columns,
    search: true,
    filters,
    load: (query) => api.get('/' + PLURAL[kind], query),
    link: (e) => `#/${PLURAL[kind]}/${encodeURIComponent(e.id)}`,
  });
  const create = form({
    resource: PLURAL[kind],
    submit: `crm.create_${kind}`,
    fields: fields(kind, c, null),
    onSubmit: async (values) => {
      const entity = await api.post('/' + PLURAL[kind], values);
      notify(t('crm.created_named', { name: entity.name }));
      location.hash = `#/${PLURAL[kind]}/${encodeURIComponent(entity.id)}`;
    },
  });
  mount(main,
    pageHeader(`crm.${PLURAL[kind]}`, h('a', { class: 'btn primary', href: '#new-entity' }, t(`crm.new_${kind}`))),
    list,
    h('section', { class: 'card', id: 'new-entity', tabindex: '-1' }, h('h2', {}, t(`crm.new_${kind}`)), create));
}

function namedLink(ref) {
  const link = entityLink(ref);
  entityName(ref).then((name) => { if (name) link.textContent = name; });
  return link;
}

async function detail(main, kind, id) {
  const path = `/${PLURAL[kind]}/${encodeURIComponent(id)}`;
  const [entity, c] = await Promise.all([api.get(path), choices(kind)]);
  const ref = `${kind}:${entity.id}`;
  let pipeline = null;
  if (kind === 'deal' && entity.pipeline) {
    pipeline = await api.get(`/pipelines/${encodeURIComponent(entity.pipeline)}`).catch(() => null);
  }
  const stage = pipeline && pipeline.stages.find((s) => s.id === entity.stage);
  const reload = async () => { await detail(main, kind, id); };

  const about = facts([
    ['crm.kind', t('crm.kind_' + kind)],
    entity.status ? ['crm.status', statusBadge(entity.status)] : null,
    kind !== 'deal' ? ['crm.phones', phones(entity.phones)] : null,
    kind !== 'deal' ? ['crm.emails', mails(entity.emails)] : null,
    ['crm.responsible', userName(c.people, entity.responsible)],
    ['crm.source', entity.source],
    entity.company ? ['crm.company', namedLink('company:' + entity.company)] : null,
    entity.contact ? ['crm.contact', namedLink('contact:' + entity.contact)] : null,
    pipeline ? ['crm.pipeline', pipeline.name] : null,
    kind === 'deal' ? ['crm.stage', stage ? stage.name : entity.stage] : null,
    entity.customer ? ['crm.repeat_of', namedLink('contact:' + entity.customer)] : null,
    entity.converted && entity.converted.length ? ['crm.converted_into', h('span', {}, entity.converted.map((r, i) => [i ? ', ' : '', namedLink(r)]))] : null,
    ['crm.created', fmt.dateTime(entity.created_at)],
    ['crm.updated', fmt.dateTime(entity.updated_at)],
  ]);

  const edit = form({
    resource: PLURAL[kind],
    fields: fields(kind, c, entity),
    onSubmit: async (values) => {
      await api.patch(path, values);
      notify(t('common.saved'));
      await reload();
    },
  });

  const remove = h('button', {
    type: 'button',
    class: 'btn danger',
    on: {
      click: async () => {
        if (!confirmAction('crm.confirm_delete', { name: entity.name })) return;
        try {
          await api.del(path);
          notify(t('common.deleted'));
          location.hash = `#/${PLURAL[kind]}`;
        } catch (err) {
          notify(err.message, 'error');
        }
      },
    },
  }, t('common.delete'));

  const extra = [];
  if (kind === 'lead' && entity.status !== 'converted') extra.push(section('crm.convert', convertForm(entity, c)));
  if (kind === 'deal' && pipeline) extra.push(section('crm.stage', stageForm(path, entity, pipeline, reload)));

  mount(main,
    pageHeader({ text: entity.name },
      h('a', { class: 'btn', href: `#/${PLURAL[kind]}` }, t('common.back')),
      remove),
    h('div', { class: 'grid detail-grid' },
      section('crm.facts', about),
      extra),
    section('crm.timeline', timeline(ref)),
    h('details', { class: 'card edit-card' }, h('summary', {}, h('h2', {}, t('crm.edit_' + kind))), edit));
}

function convertForm(lead, c) {
  const fieldList = [
    { name: 'company_name', label: 'crm.convert_company', help: 'crm.convert_company_help' },
    { name: 'create_deal', type: 'checkbox', label: 'crm.convert_deal' },
  ];
  if (c.pipelines.length > 1) {
    fieldList.push({ name: 'pipeline', type: 'select', label: 'crm.pipeline',
      options: [{ value: '', label: 'crm.default_pipeline' }, ...c.pipelines.map((p) => ({ value: p.id, label: { text: p.name } }))] });
  }
  return form({
    resource: 'convert',
    submit: 'crm.convert_submit',
    fields: fieldList,
    onSubmit: async (values) => {
      const done = await api.post(`/leads/${encodeURIComponent(lead.id)}/convert`, values);
      notify(t('crm.converted', { name: lead.name }));
      location.hash = `#/contacts/${encodeURIComponent(done.contact)}`;
    },
  });
}

function stageForm(path, deal, pipeline, reload) {
  const el = form({
    resource: 'stage',
    submit: 'crm.move',
    fields: [{ name: 'stage', type: 'select', label: 'crm.stage', value: deal.stage,
      options: pipeline.stages.map((s) => ({ value: s.id, label: { text: `${s.name} (${t('crm.status_' + s.status)})` } })) }],
    onSubmit: async (values) => {
      await api.patch(path, values);
      notify(t('common.saved'));
      await reload();
    },
  });
  const quick = (status) => {
    const target = pipeline.stages.find((s) => s.status === status);
    if (!target || deal.status === status) return null;
    return h('button', {
      type: 'button',
      class: ['btn', status === 'won' ? 'primary' : 'danger'],
      dataset: { status },
      on: {
        click: async () => {
          try {
            await api.patch(path, { stage: target.id });
            notify(t('crm.marked_' + status));
            await reload();
          } catch (err) {
            notify(err.message, 'error');
          }
        },
      },
    }, t('crm.mark_' + status));
  };
  return [el, h('div', { class: 'form-actions deal-outcome' }, quick('won'), quick('lost'))];
}
