//! `/contacts`, `/companies`, `/leads`, `/deals`: CRM entities, their search and filters,
//! and lead conversion. The four share one implementation; a macro gives each path its handlers
//! (the OpenAPI generator needs one function per path).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Access;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, List, ListQuery, validate};
use crate::crm::model::{
    DealStatus, EntityKind, EntityRef, LeadStatus, PipelineId, StageId, UserId,
};
use crate::events::EventBus;
use crate::matcher::{Identifier, normalise_phone, parse_email, search};
use crate::store::{
    EntityFilter, EntityPatch, EntityRecord, NewDealFields, NewEntity, Store, rfc3339,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Entity {
    pub id: String,
    pub kind: EntityKind,
    pub name: String,
    /// E.164.
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    /// User id of the responsible employee.
    pub responsible: Option<String>,
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    /// Contacts: their company; deals: the company.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Leads: new | converted | junk; deals: open | won | lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Leads: the contact a repeat lead belongs to (E14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Leads: what the lead was converted into.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub converted: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

impl From<EntityRecord> for Entity {
    fn from(r: EntityRecord) -> Self {
        let (contact, deal_company, pipeline, stage, deal_status) = match r.deal {
            Some(d) => (
                d.contact,
                d.company,
                Some(d.pipeline),
                Some(d.stage),
                Some(d.status.as_str().to_owned()),
            ),
            None => (None, None, None, None, None),
        };
        Self {
            id: r.entity.id,
            kind: r.entity.kind,
            name: r.name,
            phones: r.phones,
            emails: r.emails,
            responsible: r.responsible.map(|u| u.0),
            source: r.source,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            company: r.company.or(deal_company),
            status: r.lead_status.map(|s| s.as_str().to_owned()).or(deal_status),
            customer: r.customer,
            converted: r.converted.iter().map(ToString::to_string).collect(),
            contact,
            pipeline,
            stage,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntity {
    pub name: String,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub emails: Vec<String>,
    /// User id; defaults to the caller for agents.
    pub responsible: Option<String>,
    /// Source code (default `OTHER`).
    pub source: Option<String>,
    /// Contacts: company id. Deals: company id.
    pub company: Option<String>,
    /// Deals: contact id.
    pub contact: Option<String>,
    /// Deals: pipeline id (default: the default pipeline).
    pub pipeline: Option<String>,
    /// Deals: stage id (default: the pipeline's first stage).
    pub stage: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEntity {
    pub name: Option<String>,
    pub phones: Option<Vec<String>>,
    pub emails: Option<Vec<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub responsible: Option<Option<String>>,
    pub source: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub company: Option<Option<String>>,
    /// Leads: new | junk (conversion goes through `/convert`).
    pub status: Option<LeadStatus>,
    /// Deals: move to this stage (its status follows the stage).
    pub stage: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct EntityQuery {
    /// Search: a piece of the name (any letter case) or of an e-mail address, or a phone
    /// number in any format or a run of its digits (`901820` finds `+4930901820`). Deals
    /// are found by their own name and by their contact's or company's.
    pub q: Option<String>,
    /// Only entities with this phone number (any format; compared in E.164).
    pub phone: Option<String>,
    /// Only entities with this e-mail address (case-insensitive).
    pub email: Option<String>,
    /// Only entities of this responsible user id.
    pub responsible: Option<String>,
    /// Leads: `new`, `converted` or `junk`; deals: `open`, `won` or `lost`.
    pub status: Option<String>,
    /// Deals in this pipeline (id).
    pub pipeline: Option<String>,
    /// Deals in this stage (id).
    pub stage: Option<String>,
    /// Deals of this contact (id).
    pub contact: Option<String>,
    /// Contacts and deals of this company (id).
    pub company: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The longest search text, in characters.
const MAX_SEARCH: usize = 200;

/// The kind-specific filters of a list, checked against the kind: a filter the kind does
/// not have is refused, naming it, rather than ignored.
fn kind_filters(kind: EntityKind, query: &EntityQuery) -> ApiResult<Option<String>> {
    let only = |field: &str, kinds: &[EntityKind], value: &Option<String>| {
        if value.is_some() && !kinds.contains(&kind) {
            let names: Vec<&str> = kinds
                .iter()
                .map(|k| match k {
                    EntityKind::Contact => "contacts",
                    EntityKind::Company => "companies",
                    EntityKind::Lead => "leads",
                    EntityKind::Deal => "deals",
                })
                .collect();
            return Err(ApiError::bad_request(
                "invalid_query",
                Some(field.to_owned()),
                format!("{field} filters {} only", names.join(" and ")),
            ));
        }
        Ok(())
    };
    only("pipeline", &[EntityKind::Deal], &query.pipeline)?;
    only("stage", &[EntityKind::Deal], &query.stage)?;
    only("contact", &[EntityKind::Deal], &query.contact)?;
    only(
        "company",
        &[EntityKind::Contact, EntityKind::Deal],
        &query.company,
    )?;
    only(
        "status",
        &[EntityKind::Lead, EntityKind::Deal],
        &query.status,
    )?;
    let Some(status) = &query.status else {
        return Ok(None);
    };
    let known = match kind {
        EntityKind::Lead => status.parse::<LeadStatus>().map(|s| s.as_str()),
        _ => status.parse::<DealStatus>().map(|s| s.as_str()),
    };
    known
        .map(|s| Some(s.to_owned()))
        .map_err(|e| ApiError::bad_request("invalid_query", Some("status".into()), e.to_string()))
}

/// The search box's text, bounded; `None` when blank.
fn search_text(q: Option<&str>) -> ApiResult<Option<&str>> {
    let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    if q.chars().count() > MAX_SEARCH || q.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_query",
            Some("q".into()),
            format!("q must be at most {MAX_SEARCH} characters of text"),
        ));
    }
    Ok(Some(q))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertLead {
    /// Also create a company with this name.
    pub company_name: Option<String>,
    /// Also create a deal (default: true in simple mode, false in classic mode).
    pub create_deal: Option<bool>,
    /// Pipeline for the deal (default: the CRM settings' deal pipeline, else the default).
    pub pipeline: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Converted {
    pub contact: String,
    pub company: Option<String>,
    pub deal: Option<String>,
}

async fn identifiers(
    state: &AppState,
    phones: &[String],
    emails: &[String],
) -> ApiResult<Vec<Identifier>> {
    let country = state.store.crm_settings().await?.default_country;
    let mut out = Vec::with_capacity(phones.len() + emails.len());
    for (i, phone) in phones.iter().enumerate() {
        let key = normalise_phone(phone, Some(country)).map_err(|e| {
            ApiError::field(
                "invalid_phone",
                format!("phones[{i}]"),
                format!("phones[{i}]: {e}"),
            )
        })?;
        out.push(Identifier::Phone(key));
    }
    for (i, email) in emails.iter().enumerate() {
        let email = parse_email(email).map_err(|e| {
            ApiError::field(
                "invalid_email",
                format!("emails[{i}]"),
                format!("emails[{i}]: {e}"),
            )
        })?;
        out.push(Identifier::Email(email));
    }
    Ok(out)
}

async fn create(
    state: AppState,
    principal: Principal,
    kind: EntityKind,
    body: CreateEntity,
) -> ApiResult<(StatusCode, Json<Entity>)> {
    let access = Access::of(&state, &principal).await?;
    // References must be entities the creator may see: a hidden one is refused exactly
    // like a missing one, so creating cannot probe what exists.
    if let Some(company) = &body.company {
        access
            .check_reference(
                &state,
                "company",
                &EntityRef::new(EntityKind::Company, company.clone()),
            )
            .await?;
    }
    if let (EntityKind::Deal, Some(contact)) = (kind, &body.contact) {
        access
            .check_reference(
                &state,
                "contact",
                &EntityRef::new(EntityKind::Contact, contact.clone()),
            )
            .await?;
    }
    let ids = if kind == EntityKind::Deal {
        if !body.phones.is_empty() || !body.emails.is_empty() {
            return Err(ApiError::field(
                "not_allowed",
                "phones",
                "a deal carries no phones or e-mails: set them on its contact or company",
            ));
        }
        Vec::new()
    } else {
        identifiers(&state, &body.phones, &body.emails).await?
    };
    let responsible = match body.responsible {
        Some(id) => Some(UserId(id)),
        None => principal.user_id().cloned(),
    };
    let source = body.source.unwrap_or_else(|| "OTHER".to_owned());
    if !state.store.source_exists(&source).await? {
        return Err(ApiError::field(
            "unknown_source",
            "source",
            format!("source '{source}' does not exist; create it under /sources first"),
        ));
    }
    let deal = if kind == EntityKind::Deal {
        if body.contact.is_none() && body.company.is_none() {
            return Err(ApiError::field(
                "customer_required",
                "contact",
                "a deal needs a contact or a company",
            ));
        }
        let (pipeline, stage) =
            deal_placement(&state, body.pipeline.as_deref(), body.stage.as_deref()).await?;
        Some(NewDealFields {
            contact: body.contact.clone(),
            company: body.company.clone(),
            pipeline,
            stage,
        })
    } else {
        None
    };
    let record = state
        .store
        .create_entity(NewEntity {
            kind,
            name: validate::name("name", &body.name)?,
            identifiers: ids,
            responsible,
            source,
            company: if kind == EntityKind::Contact {
                body.company
            } else {
                None
            },
            customer: None,
            deal,
        })
        .await?;
    let entity = Entity::from(record);
    if let Some(event) = crate::webhooks::created_event(kind) {
        announce(&state.events, event, &entity);
    }
    Ok((StatusCode::CREATED, Json(entity)))
}

/// Tells this node's webhooks of an entity created or changed, as the API shows it; its
/// responsible decides which owners are told (A1).
pub(crate) fn announce(events: &EventBus, event: &'static str, entity: &Entity) {
    match serde_json::to_value(entity) {
        Ok(data) => events.publish_record(crate::events::RecordUpdate::on_entities(
            event,
            data,
            vec![entity.responsible.clone().map(UserId)],
        )),
        Err(e) => tracing::error!(error = %e, event, "an entity as JSON for webhooks"),
    }
}

/// [`announce`] for an entity written elsewhere (the call intake, a conversion): read
/// only when a webhook follows the event. A failed read is logged; the write it
/// announces stands.
pub(crate) async fn announce_ref(
    store: &Store,
    events: &EventBus,
    event: &'static str,
    entity: &EntityRef,
) {
    if !crate::webhooks::followed(store, event).await {
        return;
    }
    match store.get_entity(entity).await {
        Ok(record) => announce(events, event, &Entity::from(record)),
        Err(e) => {
            tracing::warn!(error = %e, event, %entity, "webhooks: cannot read a new entity");
        }
    }
}

/// The pipeline and stage of a new deal: the given ones, checked, or the defaults (T12).
async fn deal_placement(
    state: &AppState,
    pipeline: Option<&str>,
    stage: Option<&str>,
) -> ApiResult<(PipelineId, StageId)> {
    let entries = state.store.pipeline_entries().await?;
    let entry = match pipeline {
        Some(id) => entries
            .iter()
            .find(|p| p.id.as_str() == id)
            .ok_or_else(|| {
                ApiError::field(
                    "unknown_pipeline",
                    "pipeline",
                    format!("pipeline '{id}' does not exist or has no stages"),
                )
            })?,
        None => {
            let crm = state.store.crm_settings().await?;
            crm.deal_pipeline
                .as_ref()
                .and_then(|id| entries.iter().find(|p| &p.id == id))
                .or_else(|| entries.iter().find(|p| p.is_default))
                .or_else(|| entries.first())
                .ok_or_else(|| {
                    ApiError::field("unknown_pipeline", "pipeline", "no pipeline can take deals")
                })?
        }
    };
    let stage = match stage {
        Some(stage) => {
            if !state.store.stage_in_pipeline(&entry.id, stage).await? {
                return Err(ApiError::field(
                    "unknown_stage",
                    "stage",
                    format!("stage '{stage}' is not a stage of pipeline '{}'", entry.id),
                ));
            }
            StageId(stage.to_owned())
        }
        None => entry.first_stage.clone(),
    };
    Ok((entry.id.clone(), stage))
}

async fn list(
    state: AppState,
    principal: Principal,
    kind: EntityKind,
    query: EntityQuery,
) -> ApiResult<Json<List<Entity>>> {
    let access = Access::of(&state, &principal).await?;
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .page()?;
    let country = state.store.crm_settings().await?.default_country;
    let identifier = match (&query.phone, &query.email) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                Some("email".to_owned()),
                "filter by phone or by email, not both",
            ));
        }
        (Some(phone), None) => Some(
            normalise_phone(phone, Some(country))
                .map_err(|e| {
                    ApiError::bad_request("invalid_query", Some("phone".into()), e.to_string())
                })?
                .as_str()
                .to_owned(),
        ),
        (None, Some(email)) => Some(
            parse_email(email)
                .map_err(|e| {
                    ApiError::bad_request("invalid_query", Some("email".into()), e.to_string())
                })?
                .as_str()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let status = kind_filters(kind, &query)?;
    let search = search_text(query.q.as_deref())?.and_then(|q| search(q, Some(country)));
    let filter = EntityFilter {
        identifier,
        responsible: query.responsible.map(UserId),
        // Filtered in the query, so pages are full and nothing tells how much is hidden.
        responsible_in: access.visible_responsibles(),
        search,
        status,
        pipeline: query.pipeline,
        stage: query.stage,
        contact: query.contact,
        company: query.company,
    };
    let paged = state.store.list_entities(kind, &filter, &page).await?;
    Ok(Json(List::from_paged(paged, Entity::from)))
}

async fn get(
    state: AppState,
    principal: Principal,
    kind: EntityKind,
    id: String,
) -> ApiResult<Json<Entity>> {
    let access = Access::of(&state, &principal).await?;
    let record = access.see_entity(&state, &EntityRef::new(kind, id)).await?;
    Ok(Json(record.into()))
}

async fn update(
    state: AppState,
    principal: Principal,
    kind: EntityKind,
    id: String,
    body: UpdateEntity,
) -> ApiResult<Json<Entity>> {
    let access = Access::of(&state, &principal).await?;
    let entity = EntityRef::new(kind, id);
    // Handing an entity over to anyone stays possible (a lead passed to a colleague);
    // the audit log keeps who did it.
    let current = access.edit_entity(&state, &entity).await?;
    if let Some(Some(company)) = &body.company {
        access
            .check_reference(
                &state,
                "company",
                &EntityRef::new(EntityKind::Company, company.clone()),
            )
            .await?;
    }
    if body.status.is_some() && kind != EntityKind::Lead {
        return Err(ApiError::field(
            "not_allowed",
            "status",
            "only a lead's status is set directly; a deal's status follows its stage",
        ));
    }
    if body.status == Some(LeadStatus::Converted) {
        return Err(ApiError::field(
            "not_allowed",
            "status",
            "convert a lead with POST /leads/{id}/convert",
        ));
    }
    if body.stage.is_some() && kind != EntityKind::Deal {
        return Err(ApiError::field(
            "not_allowed",
            "stage",
            "only deals have a stage",
        ));
    }
    if let Some(source) = &body.source
        && !state.store.source_exists(source).await?
    {
        return Err(ApiError::field(
            "unknown_source",
            "source",
            format!("source '{source}' does not exist"),
        ));
    }
    let identifiers = match (&body.phones, &body.emails) {
        (None, None) => None,
        (phones, emails) => {
            if kind == EntityKind::Deal {
                return Err(ApiError::field(
                    "not_allowed",
                    "phones",
                    "a deal carries no phones or e-mails",
                ));
            }
            // A partial update of one list keeps the other as it is.
            let phones = phones.clone().unwrap_or(current.phones);
            let emails = emails.clone().unwrap_or(current.emails);
            Some(self::identifiers(&state, &phones, &emails).await?)
        }
    };
    let patch = EntityPatch {
        name: body
            .name
            .as_deref()
            .map(|n| validate::name("name", n))
            .transpose()?,
        identifiers,
        responsible: body.responsible.map(|r| r.map(UserId)),
        source: body.source,
        company: body.company,
        lead_status: body.status,
        deal_stage: body.stage.map(StageId),
    };
    let updated = Entity::from(state.store.update_entity(&entity, patch).await?);
    announce(&state.events, "entity.updated", &updated);
    Ok(Json(updated))
}

async fn delete(
    state: AppState,
    principal: Principal,
    kind: EntityKind,
    id: String,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_entity(&EntityRef::new(kind, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! entity_handlers {
    ($kind:expr, $path:literal, $item:literal, $tag:literal,
     $create:ident, $list:ident, $get:ident, $update:ident, $delete:ident) => {
        #[utoipa::path(post, path = $path, tag = $tag, request_body = CreateEntity,
            responses((status = 201, body = Entity), (status = 409, body = ErrorBody),
                      (status = 422, body = ErrorBody)))]
        async fn $create(
            State(state): State<AppState>,
            principal: Principal,
            ApiJson(body): ApiJson<CreateEntity>,
        ) -> ApiResult<(StatusCode, Json<Entity>)> {
            create(state, principal, $kind, body).await
        }

        #[utoipa::path(get, path = $path, tag = $tag, params(EntityQuery),
            responses((status = 200, body = List<Entity>)))]
        async fn $list(
            State(state): State<AppState>,
            principal: Principal,
            ApiQuery(query): ApiQuery<EntityQuery>,
        ) -> ApiResult<Json<List<Entity>>> {
            list(state, principal, $kind, query).await
        }

        #[utoipa::path(get, path = $item, tag = $tag,
            responses((status = 200, body = Entity), (status = 404, body = ErrorBody)))]
        async fn $get(
            State(state): State<AppState>,
            principal: Principal,
            Path(id): Path<String>,
        ) -> ApiResult<Json<Entity>> {
            get(state, principal, $kind, id).await
        }

        #[utoipa::path(patch, path = $item, tag = $tag, request_body = UpdateEntity,
            responses((status = 200, body = Entity), (status = 404, body = ErrorBody),
                      (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
        async fn $update(
            State(state): State<AppState>,
            principal: Principal,
            Path(id): Path<String>,
            ApiJson(body): ApiJson<UpdateEntity>,
        ) -> ApiResult<Json<Entity>> {
            update(state, principal, $kind, id, body).await
        }

        #[utoipa::path(delete, path = $item, tag = $tag,
            responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
        async fn $delete(
            State(state): State<AppState>,
            principal: Principal,
            Path(id): Path<String>,
        ) -> ApiResult<StatusCode> {
            delete(state, principal, $kind, id).await
        }
    };
}

entity_handlers!(
    EntityKind::Contact,
    "/contacts",
    "/contacts/{id}",
    "crm",
    create_contact,
    list_contacts,
    get_contact,
    update_contact,
    delete_contact
);
entity_handlers!(
    EntityKind::Company,
    "/companies",
    "/companies/{id}",
    "crm",
    create_company,
    list_companies,
    get_company,
    update_company,
    delete_company
);
entity_handlers!(
    EntityKind::Lead,
    "/leads",
    "/leads/{id}",
    "crm",
    create_lead,
    list_leads,
    get_lead,
    update_lead,
    delete_lead
);
entity_handlers!(
    EntityKind::Deal,
    "/deals",
    "/deals/{id}",
    "crm",
    create_deal,
    list_deals,
    get_deal,
    update_deal,
    delete_deal
);

/// Convert a lead into a contact, and optionally a company and a deal.
#[utoipa::path(post, path = "/leads/{id}/convert", tag = "crm", request_body = ConvertLead,
    responses((status = 200, body = Converted), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn convert_lead(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Converted>> {
    let access = Access::of(&state, &principal).await?;
    let lead = EntityRef::new(EntityKind::Lead, id);
    let current = access.edit_entity(&state, &lead).await?;
    // The body is optional: an empty POST converts into a contact only.
    let body: ConvertLead = if body.iter().all(u8::is_ascii_whitespace) {
        ConvertLead::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let crm = state.store.crm_settings().await?;
    let create_deal = body
        .create_deal
        .unwrap_or(crm.mode == crate::crm::model::CrmMode::Simple);
    let deal = if create_deal {
        Some(deal_placement(&state, body.pipeline.as_deref(), None).await?)
    } else {
        None
    };
    let company_name = body
        .company_name
        .as_deref()
        .map(|n| validate::name("company_name", n))
        .transpose()?;
    let done = state.store.convert_lead(&lead, company_name, deal).await?;
    announce_ref(&state.store, &state.events, "entity.updated", &lead).await;
    // A repeat lead's customer existed before (E14): only a new contact is announced.
    if current.customer.is_none() {
        announce_ref(
            &state.store,
            &state.events,
            "contact.created",
            &done.contact,
        )
        .await;
    }
    if let Some(deal) = &done.deal {
        announce_ref(&state.store, &state.events, "deal.created", deal).await;
    }
    Ok(Json(Converted {
        contact: done.contact.id,
        company: done.company.map(|c| c.id),
        deal: done.deal.map(|d| d.id),
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_contact, list_contacts))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(create_company, list_companies))
        .routes(routes!(get_company, update_company, delete_company))
        .routes(routes!(create_lead, list_leads))
        .routes(routes!(get_lead, update_lead, delete_lead))
        .routes(routes!(create_deal, list_deals))
        .routes(routes!(get_deal, update_deal, delete_deal))
        .routes(routes!(convert_lead))
}
