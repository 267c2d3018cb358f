//! `/users/{id}/tokens`: an employee's API tokens, listed (never the token or its hash)
//! and revoked. Issuing one is `POST /users/{id}/tokens` in `users`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::{AppState, List, ListQuery};
use crate::crm::model::UserId;
use crate::store::{TokenInfo, rfc3339};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Token {
    pub id: String,
    pub created_at: String,
    /// When it was last used, to the minute (written at most once a minute); null if
    /// never.
    pub last_used_at: Option<String>,
}

impl From<TokenInfo> for Token {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id.0,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
        }
    }
}

/// A person's tokens are theirs and the admins' business: anyone else gets 403.
fn may_manage(principal: &Principal, user: &UserId) -> ApiResult<()> {
    if principal.is_admin() || principal.user_id() == Some(user) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only an admin or the person themself manage their tokens".to_owned(),
        ))
    }
}

/// An employee's API tokens, oldest first (admin, or the employee themself).
#[utoipa::path(get, path = "/users/{id}/tokens", tag = "users", params(ListQuery),
    responses((status = 200, body = List<Token>), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Token>>> {
    let user = UserId(id);
    may_manage(&principal, &user)?;
    state.store.get_user(&user).await?;
    let paged = state.store.list_user_tokens(&user, &query.page()?).await?;
    Ok(Json(List::from_paged(paged, Token::from)))
}

/// Revokes one of an employee's tokens (admin, or the employee themself): it answers 401
/// from then on. 404 when the user has no such token.
#[utoipa::path(delete, path = "/users/{id}/tokens/{token_id}", tag = "users",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_token(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = UserId(id);
    may_manage(&principal, &user)?;
    state.store.delete_user_token(&user, &token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens))
        .routes(routes!(delete_token))
}
