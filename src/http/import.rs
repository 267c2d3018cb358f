//! `POST /contacts/import`: a CSV or vCard file of contacts, previewed with
//! `?dry_run=true` or imported. The rules are in [`crate::crm::import`]; this adapter reads
//! the body, finds the installation's country and the employees, and shapes the answer;
//! an import (not a dry run) is announced to webhooks before the answer.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, read_body};
use crate::crm::import::{ImportError, candidates, read_csv, rows_from_cards};
use crate::mail::vcard::parse_vcards;

/// An address book of 10,000 contacts with a few columns fits with room to spare.
pub const MAX_IMPORT_BODY: usize = 20 * 1024 * 1024;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct ImportQuery {
    /// Report what the import would do and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    /// Contacts created.
    pub created: usize,
    /// Existing contacts completed (phones, e-mails, and an empty name, company or
    /// responsible filled in).
    pub updated: usize,
    /// Rows left out, by line.
    pub skipped: Vec<SkippedRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkippedRow {
    /// CSV: the line the row starts on (the header is line 1); vCard: the card's
    /// position in the file.
    pub line: usize,
    pub reason: String,
}

enum Format {
    Csv,
    VCard,
}

fn format(req: &Request) -> ApiResult<Format> {
    let mime = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match mime.as_str() {
        "text/csv" => Ok(Format::Csv),
        "text/vcard" | "text/x-vcard" | "text/directory" => Ok(Format::VCard),
        _ => Err(ApiError::Unsupported {
            message: "send the file with Content-Type: text/csv or text/vcard".to_owned(),
        }),
    }
}

/// Import contacts (admin) from `text/csv` (a header row naming some of `name`, `phone`,
/// `email`, `company`, `responsible`; several phones or addresses in one cell separated
/// by `;` or `,`) or `text/vcard`. Rows are matched like calls and e-mails (M1–M8): a row
/// of an existing contact completes it, rows of one person are merged, a row whose
/// identifier is excluded (M4, M6) or belongs to a lead or company is skipped with the
/// reason, and no identifier ever gets a second owner (M7).
#[utoipa::path(post, path = "/contacts/import", tag = "crm", params(ImportQuery),
    request_body(content((String = "text/csv"), (String = "text/vcard"))),
    responses((status = 200, body = ImportResult), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn import_contacts(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ImportQuery>,
    req: Request,
) -> ApiResult<Json<ImportResult>> {
    principal.require_admin()?;
    let format = format(&req)?;
    let body = read_body(req, &state, MAX_IMPORT_BODY).await?;
    let rows = match format {
        Format::Csv => {
            let text = std::str::from_utf8(&body).map_err(|e| {
                ApiError::field(
                    "invalid_file",
                    "body",
                    format!("a CSV file is read as UTF-8: {e}"),
                )
            })?;
            read_csv(text).map_err(|e| {
                let field = match &e {
                    ImportError::UnknownColumns(names) => names.join(","),
                    ImportError::RepeatedColumn(name) => name.clone(),
                    _ => "body".to_owned(),
                };
                ApiError::field("invalid_file", field, e.to_string())
            })?
        }
        Format::VCard => rows_from_cards(
            parse_vcards(&body)
                .map_err(|e| ApiError::field("invalid_file", "body", e.to_string()))?,
        ),
    };
    let country = state.store.crm_settings().await?.default_country;
    let mut users = HashMap::new();
    for (id, email) in state.store.user_keys().await? {
        if let Some(email) = email {
            users.insert(email.to_lowercase(), id.clone());
        }
        users.insert(id.to_string(), id);
    }
    let (candidates, skipped) = candidates(rows, country, &users);
    let report = state
        .store
        .import_contacts(candidates, skipped, query.dry_run)
        .await?;
    if !query.dry_run {
        crate::webhooks::records::announce_import(&state.store, &report.created, &report.updated)
            .await;
    }
    Ok(Json(ImportResult {
        created: report.created.len(),
        updated: report.updated.len(),
        skipped: report
            .skipped
            .into_iter()
            .map(|s| SkippedRow {
                line: s.line,
                reason: s.reason,
            })
            .collect(),
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_contacts))
        .layer(DefaultBodyLimit::max(MAX_IMPORT_BODY))
}
