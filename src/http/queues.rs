//! `/queues`: ordered members and round-robin rotation (T9).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, List, ListQuery, validate};
use crate::crm::model::{QueueId, UserId};
use crate::store::{QueueRecord, rfc3339};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    pub name: String,
    /// User ids in turn order.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateQueue {
    pub name: Option<String>,
    /// Replaces the members; the rotation continues from where it was.
    pub members: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queue {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
    /// User id whose turn is next (T9), null for an empty queue.
    pub next: Option<String>,
    pub created_at: String,
}

impl From<QueueRecord> for Queue {
    fn from(q: QueueRecord) -> Self {
        let next = crate::crm::queue::QueueState {
            id: q.id.clone(),
            members: q.members.clone(),
            rotation: q.rotation,
        }
        .next_member()
        .map(ToString::to_string);
        Self {
            id: q.id.0,
            name: q.name,
            members: q.members.into_iter().map(|m| m.0).collect(),
            next,
            created_at: rfc3339(q.created_at),
        }
    }
}

fn user_ids(members: Vec<String>) -> Vec<UserId> {
    members.into_iter().map(UserId).collect()
}

/// Create a queue (admin).
#[utoipa::path(post, path = "/queues", tag = "routing", request_body = CreateQueue,
    responses((status = 201, body = Queue), (status = 422, body = ErrorBody)))]
async fn create_queue(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateQueue>,
) -> ApiResult<(StatusCode, Json<Queue>)> {
    principal.require_admin()?;
    let name = validate::name("name", &body.name)?;
    let queue = state
        .store
        .create_queue(&name, &user_ids(body.members))
        .await?;
    // Who shares a queue decides the `queue` level's reach.
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok((StatusCode::CREATED, Json(queue.into())))
}

/// List queues.
#[utoipa::path(get, path = "/queues", tag = "routing", params(ListQuery),
    responses((status = 200, body = List<Queue>)))]
async fn list_queues(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Queue>>> {
    principal.require_employee()?;
    let paged = state.store.list_queues(&query.page()?).await?;
    Ok(Json(List::from_paged(paged, Queue::from)))
}

/// One queue.
#[utoipa::path(get, path = "/queues/{id}", tag = "routing",
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody)))]
async fn get_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Queue>> {
    principal.require_employee()?;
    Ok(Json(state.store.get_queue(&QueueId(id)).await?.into()))
}

/// Rename a queue or replace its members (admin).
#[utoipa::path(patch, path = "/queues/{id}", tag = "routing", request_body = UpdateQueue,
    responses((status = 200, body = Queue), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateQueue>,
) -> ApiResult<Json<Queue>> {
    principal.require_admin()?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let members = body.members.map(user_ids);
    let queue = state
        .store
        .update_queue(&QueueId(id), name.as_deref(), members.as_deref())
        .await?;
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(Json(queue.into()))
}

/// Delete a queue no number uses (admin).
#[utoipa::path(delete, path = "/queues/{id}", tag = "routing",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_queue(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state.store.delete_queue(&QueueId(id)).await?;
    state.access_changed.send_modify(|v| *v = v.wrapping_add(1));
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_queue, list_queues))
        .routes(routes!(get_queue, update_queue, delete_queue))
}
