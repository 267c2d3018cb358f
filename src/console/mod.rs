//! The web console: the browser face of the same API.
//!
//! `GET /` serves a small single-page application (HTML shell, ES modules, one stylesheet)
//! embedded in the binary from `console/`. The pages talk only to the JSON API under
//! `/api/v1` with the session cookie, so every list, detail and form goes through the same
//! handlers and the same access checks (A1–A3) as any other client: this module renders no
//! CRM data and never queries the store. What it owns: the shell (language, string
//! catalogue), the embedded assets with their security headers, and the catalogue lookup
//! the server uses for the few strings it draws itself (the dashboard chart).

mod assets;
mod catalogue;
mod lang;

use axum::Router;
use axum::routing::get;

use crate::http::AppState;

pub use catalogue::{LANGUAGES, text};
pub use lang::request_lang;

/// `GET /` and `GET /console/*`: no authentication (the sign-in page must load); the data
/// comes from the API, which checks the session on every request.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(assets::shell))
        .route("/console/{*path}", get(assets::asset))
}
