//! `/trunks`: carrier trunks we register to and customer PBXs that reach us (T2).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Principal, generate_token, hash_token};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::users::NewToken;
use super::{AppState, List, ListQuery, validate};
use crate::crm::model::{Transport, TrunkId, TrunkKind, TrunkRegistrationState};
use crate::store::{TrunkInput, TrunkRecord, TrunkRegistrationRecord, rfc3339};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrunk {
    pub name: String,
    pub kind: TrunkKind,
    /// Name of a SIP profile (default `generic`).
    pub profile: Option<String>,
    pub host: Option<String>,
    /// Default 5060 (5061 with transport `tls`).
    pub port: Option<u16>,
    /// Default udp. `tls`: the gateway connects to the carrier over TLS and verifies its
    /// certificate for `host` against the public roots and `sip_tls_ca`.
    pub transport: Option<Transport>,
    pub username: Option<String>,
    /// Write-only.
    pub password: Option<String>,
    /// Carrier trunks: register out (default true for carriers).
    pub register: Option<bool>,
    /// PBX trunks: source addresses recognised without registration.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Every call through this trunk has its media relayed by the gateway, whatever the
    /// number says (default false), for carriers that take media only from the trunk's
    /// address.
    pub media_relay: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTrunk {
    pub name: Option<String>,
    pub profile: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub host: Option<Option<String>>,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    #[serde(default, deserialize_with = "validate::double_option")]
    pub username: Option<Option<String>>,
    pub password: Option<String>,
    pub register: Option<bool>,
    pub allowed_ips: Option<Vec<String>>,
    pub media_relay: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Trunk {
    pub id: String,
    pub name: String,
    pub kind: TrunkKind,
    pub profile: String,
    pub host: Option<String>,
    pub port: u16,
    pub transport: Transport,
    pub username: Option<String>,
    /// Whether a password is stored (it is never returned, A4).
    pub password_set: bool,
    pub register: bool,
    pub allowed_ips: Vec<String>,
    pub media_relay: bool,
    pub created_at: String,
    /// Our registration to this carrier; `null` for trunks we do not register to (PBX
    /// trunks, `register: false`, or a profile that does not register).
    pub registration: Option<TrunkRegistration>,
}

/// Where our outbound REGISTER to a carrier trunk stands (T2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrunkRegistration {
    pub state: TrunkRegistrationState,
    /// Until when the carrier holds our binding, as its last 200 OK granted.
    pub registered_until: Option<String>,
    /// Why the last attempt failed; `null` after a success.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: i64,
    /// When the next REGISTER (refresh or retry) goes out.
    pub next_attempt_at: Option<String>,
    /// When this state was last written; `null` until the first attempt.
    pub updated_at: Option<String>,
}

impl From<TrunkRegistrationRecord> for TrunkRegistration {
    fn from(r: TrunkRegistrationRecord) -> Self {
        Self {
            state: r.state,
            registered_until: r.registered_until.map(rfc3339),
            last_error: r.last_error,
            failures: r.failures,
            next_attempt_at: r.next_attempt_at.map(rfc3339),
            updated_at: Some(rfc3339(r.updated_at)),
        }
    }
}

impl Trunk {
    /// The API view of a trunk with its registration state, if we register to it.
    fn new(
        state: &AppState,
        t: TrunkRecord,
        registration: Option<TrunkRegistrationRecord>,
    ) -> Self {
        let registers = crate::sip::trunk::registers(
            t.kind,
            t.register,
            t.host.as_deref(),
            t.username.as_deref(),
            &t.profile,
            &state.profiles,
        );
        let registration = registers.then(|| match registration {
            Some(row) => row.into(),
            // Not attempted yet: the registration task picks new trunks up within seconds.
            None => TrunkRegistration {
                state: TrunkRegistrationState::Registering,
                registered_until: None,
                last_error: None,
                failures: 0,
                next_attempt_at: None,
                updated_at: None,
            },
        });
        let mut trunk = Trunk::from(t);
        trunk.registration = registration;
        trunk
    }
}

impl From<TrunkRecord> for Trunk {
    fn from(t: TrunkRecord) -> Self {
        Self {
            id: t.id.0,
            name: t.name,
            kind: t.kind,
            profile: t.profile,
            host: t.host,
            port: t.port,
            transport: t.transport,
            username: t.username,
            password_set: t.has_password,
            register: t.register,
            allowed_ips: t.allowed_ips,
            media_relay: t.media_relay,
            created_at: rfc3339(t.created_at),
            registration: None,
        }
    }
}

/// A PBX trunk registers under its username in the same namespace as employees'
/// extensions; an extension would shadow it, so the clash is refused here.
async fn check_username_free(state: &AppState, input: &TrunkInput) -> ApiResult<()> {
    if input.kind != TrunkKind::Pbx {
        return Ok(());
    }
    let Some(username) = &input.username else {
        return Ok(());
    };
    if state.store.sip_credentials(username).await?.is_some() {
        return Err(ApiError::Conflict {
            code: "username_taken",
            message: format!(
                "'{username}' is an employee's SIP extension; give the PBX trunk another username"
            ),
        });
    }
    Ok(())
}

fn check(state: &AppState, input: &TrunkInput) -> ApiResult<()> {
    if state.profiles.get(&input.profile).is_none() {
        return Err(ApiError::field(
            "unknown_profile",
            "profile",
            format!(
                "'{}' is not a SIP profile; use one of: {}",
                input.profile,
                state.profiles.names().join(", ")
            ),
        ));
    }
    for (i, ip) in input.allowed_ips.iter().enumerate() {
        validate::ip_or_network(&format!("allowed_ips[{i}]"), ip)?;
    }
    if let Some(host) = &input.host {
        validate::host("host", host)?;
    }
    if input.port == 0 {
        return Err(ApiError::field(
            "invalid_port",
            "port",
            "port must be 1 to 65535",
        ));
    }
    if input.kind == TrunkKind::Carrier && input.register {
        if input.host.is_none() {
            return Err(ApiError::field(
                "host_required",
                "host",
                "a carrier trunk we register to needs the carrier's host",
            ));
        }
        if input.username.is_none() {
            return Err(ApiError::field(
                "username_required",
                "username",
                "registering to a carrier needs the account's username",
            ));
        }
    }
    if input.kind == TrunkKind::Pbx && input.register {
        return Err(ApiError::field(
            "invalid_register",
            "register",
            "register applies to carrier trunks; a PBX registers to us (username/password) or is recognised by allowed_ips",
        ));
    }
    Ok(())
}

/// Create a trunk (admin).
#[utoipa::path(post, path = "/trunks", tag = "routing", request_body = CreateTrunk,
    responses((status = 201, body = Trunk), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_trunk(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTrunk>,
) -> ApiResult<(StatusCode, Json<Trunk>)> {
    principal.require_admin()?;
    let input = TrunkInput {
        name: validate::name("name", &body.name)?,
        register: body.register.unwrap_or(body.kind == TrunkKind::Carrier),
        kind: body.kind,
        profile: body.profile.unwrap_or_else(|| "generic".to_owned()),
        host: body.host,
        port: body
            .port
            .unwrap_or(body.transport.unwrap_or(Transport::Udp).default_port()),
        transport: body.transport.unwrap_or(Transport::Udp),
        username: body.username,
        password: body.password,
        allowed_ips: body.allowed_ips,
    };
    check(&state, &input)?;
    check_username_free(&state, &input).await?;
    let mut trunk = state.store.create_trunk(&input).await?;
    if let Some(relay) = body.media_relay.filter(|r| *r != trunk.media_relay) {
        state.store.set_trunk_media_relay(&trunk.id, relay).await?;
        trunk.media_relay = relay;
    }
    Ok((StatusCode::CREATED, Json(Trunk::new(&state, trunk, None))))
}

/// List trunks (admin).
#[utoipa::path(get, path = "/trunks", tag = "routing", params(ListQuery),
    responses((status = 200, body = List<Trunk>)))]
async fn list_trunks(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Trunk>>> {
    principal.require_admin()?;
    let paged = state.store.list_trunks(&query.page()?).await?;
    let mut registrations = state.store.trunk_registrations().await?;
    Ok(Json(List::from_paged(paged, |t| {
        let registration = registrations.remove(&t.id);
        Trunk::new(&state, t, registration)
    })))
}

/// One trunk (admin).
#[utoipa::path(get, path = "/trunks/{id}", tag = "routing",
    responses((status = 200, body = Trunk), (status = 404, body = ErrorBody)))]
async fn get_trunk(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Trunk>> {
    principal.require_admin()?;
    let id = TrunkId(id);
    let trunk = state.store.get_trunk(&id).await?;
    let registration = state.store.trunk_registration(&id).await?;
    Ok(Json(Trunk::new(&state, trunk, registration)))
}

/// Change a trunk (admin); an absent password keeps the stored one.
#[utoipa::path(patch, path = "/trunks/{id}", tag = "routing", request_body = UpdateTrunk,
    responses((status = 200, body = Trunk), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_trunk(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateTrunk>,
) -> ApiResult<Json<Trunk>> {
    principal.require_admin()?;
    let id = TrunkId(id);
    let current = state.store.get_trunk(&id).await?;
    let input = TrunkInput {
        name: match body.name {
            Some(n) => validate::name("name", &n)?,
            None => current.name,
        },
        kind: current.kind,
        profile: body.profile.unwrap_or(current.profile),
        host: body.host.unwrap_or(current.host),
        port: body.port.unwrap_or(current.port),
        transport: body.transport.unwrap_or(current.transport),
        username: body.username.unwrap_or(current.username),
        password: body.password,
        register: body.register.unwrap_or(current.register),
        allowed_ips: body.allowed_ips.unwrap_or(current.allowed_ips),
    };
    check(&state, &input)?;
    check_username_free(&state, &input).await?;
    let mut trunk = state.store.update_trunk(&id, &input).await?;
    if let Some(relay) = body.media_relay.filter(|r| *r != trunk.media_relay) {
        state.store.set_trunk_media_relay(&trunk.id, relay).await?;
        trunk.media_relay = relay;
    }
    let registration = state.store.trunk_registration(&id).await?;
    Ok(Json(Trunk::new(&state, trunk, registration)))
}

/// Delete a trunk no number uses (admin).
#[utoipa::path(delete, path = "/trunks/{id}", tag = "routing",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_trunk(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_trunk(&TrunkId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a token a PBX uses to push `/calls/events` (admin). Shown once.
#[utoipa::path(post, path = "/trunks/{id}/tokens", tag = "routing",
    responses((status = 201, body = NewToken), (status = 404, body = ErrorBody)))]
async fn create_trunk_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    principal.require_admin()?;
    let id = TrunkId(id);
    state.store.get_trunk(&id).await?;
    let token = generate_token();
    state
        .store
        .create_token(&hash_token(&token), "trunk", None, Some(&id), "trunk")
        .await?;
    Ok((StatusCode::CREATED, Json(NewToken { token })))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_trunk, list_trunks))
        .routes(routes!(get_trunk, update_trunk, delete_trunk))
        .routes(routes!(create_trunk_token))
}
