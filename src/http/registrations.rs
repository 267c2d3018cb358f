//! `/registrations`: who is registered from where (admin).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::ApiResult;
use super::extract::ApiQuery;
use super::{AppState, List, ListQuery};
use crate::store::{RegistrationListing, now_ms, rfc3339};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registration {
    /// Address of record: the extension, or the trunk id.
    pub aor: String,
    /// User id, when an agent's phone registered.
    pub user: Option<String>,
    /// Trunk id, when a PBX trunk registered.
    pub trunk: Option<String>,
    pub contact: String,
    /// udp | tcp
    pub transport: String,
    /// The address the REGISTER came from (what NAT made of the contact).
    pub source: String,
    pub expires: String,
    pub expires_in_s: i64,
    /// The device, as its User-Agent header names it.
    pub user_agent: Option<String>,
    /// When this device first registered (refreshes keep it).
    pub since: String,
    /// The employee's name, or the trunk's.
    pub name: Option<String>,
    /// The employee's extension (null for trunks).
    pub extension: Option<String>,
}

impl Registration {
    fn from_listing(listing: RegistrationListing, now: i64) -> Self {
        let r = listing.record;
        let (user, trunk) = match r.owner_kind.as_str() {
            "trunk" => (None, Some(r.owner_id)),
            _ => (Some(r.owner_id), None),
        };
        Self {
            aor: r.aor,
            user,
            trunk,
            contact: r.contact,
            transport: r.transport,
            source: r.source,
            expires: rfc3339(r.expires_at),
            expires_in_s: ((r.expires_at - now) / 1000).max(0),
            user_agent: r.user_agent,
            since: rfc3339(listing.registered_at),
            name: listing.owner_name,
            extension: listing.extension,
        }
    }
}

/// Live registrations of agents' phones and PBX trunks (admin): whose (user or trunk, with
/// name and extension), which device, over which transport from where, since when and until
/// when.
#[utoipa::path(get, path = "/registrations", tag = "sip", params(ListQuery),
    responses((status = 200, body = List<Registration>)))]
async fn list_registrations(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Registration>>> {
    principal.require_admin()?;
    let now = now_ms();
    let paged = state.store.list_registrations(now, &query.page()?).await?;
    Ok(Json(List::from_paged(paged, |r| {
        Registration::from_listing(r, now)
    })))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_registrations))
}
