//! The list shape of API.md: `{"items": [...], "next": cursor|null}` with `?limit=&cursor=`.

use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use crate::store::{Page, Paged};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Cursor of the next page (pass as `?cursor=`), or null on the last page.
    pub next: Option<String>,
}

impl<T> List<T> {
    pub fn from_paged<R>(paged: Paged<R>, map: impl FnMut(R) -> T) -> Self {
        Self {
            items: paged.items.into_iter().map(map).collect(),
            next: paged.next,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// At most this many items (1–500, default 100).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page(&self) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(Page::DEFAULT);
        if limit == 0 || limit > Page::MAX {
            return Err(ApiError::bad_request(
                "invalid_query",
                Some("limit".to_owned()),
                format!("limit must be between 1 and {}", Page::MAX),
            ));
        }
        Ok(Page {
            limit,
            after: self.cursor.clone(),
        })
    }
}
