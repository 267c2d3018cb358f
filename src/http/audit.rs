//! The audit log: every change the API allowed is recorded (who, what, on which
//! object, when, from which address), and admins read it at `GET /audit`.
//!
//! A change is a POST, PUT, PATCH or DELETE answered 2xx: a refused or failed request
//! changed nothing. [`record`] wraps the API's routes. It learns the caller from the
//! `Principal` extractor through a [`PrincipalSlot`] (no second token lookup), the route
//! template from `MatchedPath`, and the peer from `ConnectInfo`, never from
//! `X-Forwarded-For`, which any client can write. Of a request body it keeps the names of
//! the top-level fields, never values: bodies carry SIP and IMAP passwords and secrets.
//!
//! The row is written in the change's own transaction (see `store::audit`): the handler
//! runs with the row pending, and a change whose row cannot be written fails (5xx) and
//! is rolled back. That holds for pushed call events, click-to-calls and sign-ins too:
//! their rows travel with the job into the intake's or the call steps' group commit, or
//! go with the session row. A request that wrote nothing in a transaction (a queue's
//! hold music, a file; a mailbox's connection test; a call event answered as a repeat
//! without one) gets its row after the handler answered; that row cannot undo anything,
//! so if it cannot be written it is logged and counted
//! (`leadline_audit_write_failures_total`). It reads
//! only small JSON bodies (up to [`MAX_PEEK`]) and hands the handler and the client
//! exactly the bytes it read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{BodyExt as _, BodyStream, StreamBody};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiQuery, is_json};
use super::{AppState, List, ListQuery};
use crate::store::{AuditRecord, NewAudit, PendingAudit, rfc3339};

/// Request and response bodies up to this size are read for field names and the id of a
/// created object; larger ones pass through unread (their fields are recorded as `[]`).
pub const MAX_PEEK: usize = 64 * 1024;

/// Where the `Principal` extractor leaves who is calling: for the row the change's
/// transaction writes, and for one written after the handler. Shared between the
/// middleware and the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PrincipalSlot {
    principal: Arc<Mutex<Option<Principal>>>,
    pending: Option<PendingAudit>,
}

impl PrincipalSlot {
    pub fn fill(&self, principal: &Principal) {
        *self.principal.lock().unwrap_or_else(|e| e.into_inner()) = Some(principal.clone());
        if let Some(pending) = &self.pending {
            pending.set_actor(actor(Some(principal)));
        }
    }

    fn take(&self) -> Option<Principal> {
        self.principal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The middleware: runs the request and records it if it was an allowed change.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_change(req.method()) || is_dry_run(&req) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    let (req, request_body) = if is_json(req.headers()) {
        let (parts, body) = req.into_parts();
        let (seen, body) = peek(body, MAX_PEEK).await;
        (Request::from_parts(parts, body), seen)
    } else {
        (req, None)
    };
    let template = template.unwrap_or_else(|| path.clone());
    let fields = request_body.as_deref().map(field_names).unwrap_or_default();
    let pending = PendingAudit::new(
        NewAudit {
            actor: actor(None),
            action: format!("{method} {template}"),
            object: Some(object(&template, &path, None)),
            fields: fields.clone(),
            remote_addr: remote_addr.clone(),
            status: expected_status(&method, &template),
        },
        creation_kind(&template),
    );
    let slot = PrincipalSlot {
        principal: Arc::default(),
        pending: Some(pending.clone()),
    };
    let mut req = req;
    req.extensions_mut().insert(slot.clone());

    let response = pending.scope(next.run(req)).await;
    let status = response.status();
    let written = pending.written();
    if !status.is_success() && written.is_none() {
        return response;
    }
    let (response, created) = if status == StatusCode::CREATED && is_json(response.headers()) {
        let (parts, body) = response.into_parts();
        let (seen, body) = peek(body, MAX_PEEK).await;
        (
            Response::from_parts(parts, body),
            seen.as_deref().and_then(created_id),
        )
    } else {
        (response, None)
    };
    let object = object(&template, &path, created.as_deref());

    if let Some(written) = written {
        // The row went in with the change. Only an answer other than the one expected
        // (another 2xx, or a failure after the commit) corrects it.
        if written.status != status.as_u16() || written.object.as_deref() != Some(&object) {
            let amended = state
                .store
                .amend_audit(&written.id, Some(&object), status.as_u16())
                .await;
            if let Err(cause) = amended {
                tracing::error!(%cause, %method, %path, "could not correct the audit log entry");
                metrics::counter!("leadline_audit_write_failures_total").increment(1);
            }
        }
        return response;
    }

    // The request wrote nothing in a transaction (a hold music file, a connection test,
    // a repeated call event): its row is written after it.
    let entry = NewAudit {
        actor: actor(slot.take().as_ref()),
        action: format!("{method} {template}"),
        object: Some(object),
        fields,
        remote_addr,
        status: status.as_u16(),
    };
    let store = state.store.clone();
    let (queued, is_queued) = tokio::sync::oneshot::channel();
    // In a task of its own: a client that hangs up now drops this future, but its change
    // is made and must still be recorded. The answer waits until the row is queued (a
    // full queue holds changes back) but not for its commit: awaiting a second commit
    // per request is a round trip more on SQLite's one writer. `GET /audit` flushes the
    // queue first, so the log shows every change answered before it is read.
    tokio::spawn(async move {
        let committed = match store.queue_audit(entry).await {
            Ok(row) => {
                let _ = queued.send(());
                row.committed().await
            }
            Err(e) => {
                let _ = queued.send(());
                Err(e)
            }
        };
        if let Err(cause) = committed {
            // The change itself is done: the client has its answer, the operator the alarm.
            tracing::error!(%cause, %method, %path, "could not write the audit log entry");
            metrics::counter!("leadline_audit_write_failures_total").increment(1);
        }
    });
    let _ = is_queued.await;
    response
}

/// The answer a change gives unless it creates an object (201): the row written in the
/// change's transaction carries it before the handler has answered.
fn expected_status(method: &Method, template: &str) -> u16 {
    if method == Method::DELETE {
        204
    } else if ACCEPTED.contains(&template) {
        202
    } else {
        200
    }
}

/// Changes answered `202 Accepted`: started, and followed elsewhere.
const ACCEPTED: [&str; 1] = ["/api/v1/calls/dial"];

/// The kind a route's created objects are named with: a collection route, no parameter.
fn creation_kind(template: &str) -> Option<&'static str> {
    if template.contains('{') {
        return None;
    }
    template.rsplit('/').next().and_then(kind_of)
}

/// Deletes entries older than `days` every hour until `cancel`; `days == 0` keeps them.
pub async fn retention(
    store: crate::store::Store,
    days: u32,
    cancel: tokio_util::sync::CancellationToken,
) {
    if days == 0 {
        return;
    }
    let keep_ms = i64::from(days) * 24 * 3600 * 1000;
    loop {
        match store
            .delete_audit_before(crate::store::now_ms() - keep_ms)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, days, "audit log entries past retention deleted")
            }
            Err(err) => tracing::error!(%err, "audit log retention sweep failed"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

/// A dry-run is a POST only for its body: it changes nothing, so nothing is recorded and
/// the database stays exactly as it was.
fn is_dry_run(req: &Request) -> bool {
    req.extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| m.as_str().ends_with("/dry-run"))
}

fn is_change(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// How the log names who acted.
pub fn actor(principal: Option<&Principal>) -> String {
    match principal {
        Some(Principal::User { id, .. }) => format!("user:{id}"),
        Some(Principal::Bootstrap) => "bootstrap".to_owned(),
        Some(Principal::Trunk(id)) => format!("trunk:{id}"),
        // Every changing route asks for a token; kept visible should one ever not.
        None => "anonymous".to_owned(),
    }
}

/// The object a change is about: `kind:id` where the route names it (the first path
/// parameter, `/contacts/{id}` → `contact:<id>`, `/users/{id}/tokens` → `user:<id>`), or
/// the id of the object a 201 answer created (`POST /contacts` → `contact:<new id>`);
/// otherwise the request path (`/api/v1/settings/access`).
pub fn object(template: &str, path: &str, created: Option<&str>) -> String {
    let names: Vec<&str> = template.split('/').collect();
    let values: Vec<&str> = path.split('/').collect();
    match names.iter().position(|s| s.starts_with('{')) {
        Some(at) if at > 0 && names.len() == values.len() => {
            if let Some(kind) = kind_of(names[at - 1]) {
                let id = percent_encoding::percent_decode_str(values[at]).decode_utf8_lossy();
                return format!("{kind}:{id}");
            }
        }
        Some(_) => {}
        None => {
            if let (Some(id), Some(kind)) = (created, names.last().and_then(|c| kind_of(c))) {
                return format!("{kind}:{id}");
            }
        }
    }
    path.to_owned()
}

/// The object kind of a collection in the API's paths (singular, as in entity refs).
fn kind_of(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "users" => "user",
        "queues" => "queue",
        "trunks" => "trunk",
        "numbers" => "number",
        "exceptions" => "exception",
        "sources" => "source",
        "pipelines" => "pipeline",
        "contacts" => "contact",
        "companies" => "company",
        "leads" => "lead",
        "deals" => "deal",
        "activities" => "activity",
        "calls" => "call",
        "mailboxes" => "mailbox",
        "emails" => "email",
        "webhooks" => "webhook",
        _ => return None,
    })
}

/// The top-level field names of a JSON object body, sorted; `[]` for anything else.
/// Values are skipped unread: they may be passwords.
pub fn field_names(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(body)
        .map(|fields| fields.into_keys().collect())
        .unwrap_or_default()
}

/// The `id` of the object a 201 answer carries.
fn created_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Created {
        id: Option<String>,
    }
    serde_json::from_slice::<Created>(body).ok()?.id
}

/// Reads `body` up to `limit` bytes. Gives its bytes if it ended within the limit, and in
/// every case a body that yields exactly what `body` would have: data, trailers, error.
async fn peek(mut body: Body, limit: usize) -> (Option<Bytes>, Body) {
    let mut seen = BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                let bytes = seen.freeze();
                return (Some(bytes.clone()), Body::from(bytes));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    seen.extend_from_slice(&data);
                    if seen.len() > limit {
                        return (None, replay(seen.freeze(), None, body));
                    }
                }
                Err(other) => return (None, replay(seen.freeze(), Some(Ok(other)), body)),
            },
            Some(Err(e)) => return (None, replay(seen.freeze(), Some(Err(e)), body)),
        }
    }
}

/// The frames already read, then the rest of the body.
fn replay(seen: Bytes, next: Option<Result<Frame<Bytes>, axum::Error>>, rest: Body) -> Body {
    let head: Vec<Result<Frame<Bytes>, axum::Error>> = (!seen.is_empty())
        .then(|| Ok(Frame::data(seen)))
        .into_iter()
        .chain(next)
        .collect();
    Body::new(StreamBody::new(
        tokio_stream::iter(head).chain(BodyStream::new(rest)),
    ))
}

/// One entry of the audit log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// RFC 3339.
    pub at: String,
    /// `user:<id>`, `bootstrap` (the admin bootstrap token) or `trunk:<id>`.
    pub actor: String,
    /// Method and route: `PATCH /api/v1/contacts/{id}`.
    pub action: String,
    /// `contact:<id>`, `number:<id>` …, or the request path.
    pub object: Option<String>,
    /// Top-level fields of the request body (names only, never values).
    pub fields: Vec<String>,
    /// The TCP peer's address (a proxy in front shows as itself).
    pub remote_addr: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id.0,
            at: rfc3339(r.at),
            actor: r.actor,
            action: r.action,
            object: r.object,
            fields: r.fields,
            remote_addr: r.remote_addr,
            status: r.status,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// At most this many items (1–500, default 100).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
    /// Only the entries about this object (`contact:<id>`).
    pub object: Option<String>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/audit", tag = "access", params(AuditQuery),
    responses((status = 200, body = List<AuditEntry>), (status = 403, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<List<AuditEntry>>> {
    principal.require_admin()?;
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    // Changes answered before this request are in the log it reads.
    state.store.flush_audit().await?;
    let paged = state
        .store
        .list_audit(query.object.as_deref(), &page)
        .await?;
    Ok(Json(List::from_paged(paged, AuditEntry::from)))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_named_by_the_first_path_parameter() {
        assert_eq!(
            object("/api/v1/contacts/{id}", "/api/v1/contacts/c-1", None),
            "contact:c-1"
        );
        assert_eq!(
            object(
                "/api/v1/users/{id}/tokens",
                "/api/v1/users/u-1/tokens",
                Some("t")
            ),
            "user:u-1"
        );
        assert_eq!(
            object(
                "/api/v1/numbers/{id}/greeting",
                "/api/v1/numbers/n%201/greeting",
                None
            ),
            "number:n 1"
        );
    }

    #[test]
    fn a_creation_is_named_by_the_new_id() {
        assert_eq!(
            object("/api/v1/companies", "/api/v1/companies", Some("co-1")),
            "company:co-1"
        );
        assert_eq!(
            object("/api/v1/mailboxes", "/api/v1/mailboxes", Some("m-1")),
            "mailbox:m-1"
        );
    }

    #[test]
    fn without_a_named_object_the_path_is_the_object() {
        assert_eq!(
            object("/api/v1/settings/access", "/api/v1/settings/access", None),
            "/api/v1/settings/access"
        );
        assert_eq!(
            object("/api/v1/calls/events", "/api/v1/calls/events", Some("x")),
            "/api/v1/calls/events",
            "no collection of that name"
        );
    }

    #[test]
    fn every_routed_collection_has_an_object_kind() {
        let openapi = crate::http::api_routes().into_openapi();
        for path in openapi.paths.paths.keys() {
            let segments: Vec<&str> = path.split('/').collect();
            if let Some(at) = segments.iter().position(|s| s.starts_with('{')) {
                assert!(
                    kind_of(segments[at - 1]).is_some(),
                    "{path}: add '{}' to kind_of",
                    segments[at - 1]
                );
            }
        }
    }

    #[test]
    fn a_collection_route_names_what_it_creates_and_an_item_route_does_not() {
        assert_eq!(creation_kind("/api/v1/numbers"), Some("number"));
        assert_eq!(creation_kind("/api/v1/numbers/{id}"), None);
        assert_eq!(creation_kind("/api/v1/users/{id}/tokens"), None);
        assert_eq!(creation_kind("/api/v1/settings/crm"), None);
        assert_eq!(
            expected_status(&Method::DELETE, "/api/v1/numbers/{id}"),
            204
        );
        assert_eq!(expected_status(&Method::PATCH, "/api/v1/numbers/{id}"), 200);
        assert_eq!(expected_status(&Method::POST, "/api/v1/calls/dial"), 202);
    }

    #[test]
    fn only_field_names_are_kept_never_values() {
        let body = br#"{"name":"Anna","sip_password":"hunter2","phones":["+49"]}"#;
        assert_eq!(field_names(body), ["name", "phones", "sip_password"]);
        assert!(field_names(br#"["a"]"#).is_empty());
        assert!(field_names(b"not json").is_empty());
        assert!(field_names(b"").is_empty());
    }

    #[test]
    fn the_created_id_is_read_from_a_json_object() {
        assert_eq!(
            created_id(br#"{"id":"c-1","name":"x"}"#).as_deref(),
            Some("c-1")
        );
        assert_eq!(created_id(br#"{"token":"ll_secret"}"#), None);
        assert_eq!(created_id(br#"{"id":7}"#), None);
    }

    #[test]
    fn actors_are_named_by_kind_and_id() {
        use crate::crm::model::{Role, TrunkId, UserId};
        let user = Principal::User {
            id: UserId("u1".into()),
            role: Role::Agent,
        };
        assert_eq!(actor(Some(&user)), "user:u1");
        assert_eq!(actor(Some(&Principal::Bootstrap)), "bootstrap");
        assert_eq!(
            actor(Some(&Principal::Trunk(TrunkId("t1".into())))),
            "trunk:t1"
        );
    }

    #[tokio::test]
    async fn a_peeked_body_yields_the_same_bytes_small_or_large() {
        let small = Bytes::from_static(br#"{"a":1}"#);
        let (seen, body) = peek(Body::from(small.clone()), 16).await;
        assert_eq!(seen.as_ref(), Some(&small));
        assert_eq!(body.collect().await.unwrap().to_bytes(), small);

        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![b'x'; 10])),
            Ok(Bytes::from(vec![b'y'; 10])),
            Ok(Bytes::from(vec![b'z'; 10])),
        ];
        let (seen, body) = peek(Body::from_stream(tokio_stream::iter(chunks)), 16).await;
        assert_eq!(seen, None);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 30);
        assert!(all.starts_with(&[b'x'; 10]) && all.ends_with(&[b'z'; 10]));
    }
}
