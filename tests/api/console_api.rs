//! The API the web console's pages read: activity notes, entity search and filters, the
//! call log's filters, an employee's open work, e-mail attachments, statistics, API
//! tokens and registrations, each under the access rules (A1–A3) of every other endpoint.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Two agents who share no queue (Anna and Ben) at the default level `own`, and a number
/// without a queue, so a known caller's call rings only their responsible (T5).
struct Team {
    anna: Agent,
    ben: Agent,
}

struct Agent {
    id: String,
    token: String,
}

async fn team(app: &TestApp) -> Team {
    let mut agents = Vec::new();
    for (name, extension) in [("Anna", "101"), ("Ben", "102")] {
        let id = app
            .create_user(
                name,
                &format!("{}@firma.test", name.to_lowercase()),
                "agent",
                extension,
            )
            .await;
        let token = app.token_for(&id).await;
        agents.push(Agent { id, token });
    }
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": "+4930901820", "default_country": "DE", "queue": null}),
        StatusCode::CREATED,
    )
    .await;
    let ben = agents.pop().unwrap();
    let anna = agents.pop().unwrap();
    Team { anna, ben }
}

async fn call(app: &TestApp, method: Method, path: &str, token: &str) -> (StatusCode, Value) {
    app.request(method, path, Some(token), None).await
}

async fn get_as(app: &TestApp, path: &str, token: &str) -> Value {
    let (status, body) = call(app, Method::GET, path, token).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn patch_as(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    app.request(Method::PATCH, path, Some(token), Some(body))
        .await
}

/// Creates an entity (as admin) for `responsible`; its id.
async fn entity(app: &TestApp, path: &str, body: Value) -> String {
    app.post_ok(path, body, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A call activity's note: written and cleared with the rights that complete it, shown
/// on the timeline; the call links its activity. A colleague who may not see the
/// customer gets 404 (A2); one who sees but may not change it gets 403 (A1).
async fn a1_a2_a_note_on_a_call_needs_the_rights_that_complete_it(app: &TestApp) {
    let team = team(app).await;
    let contact = entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Clara Kunde", "phones": ["+4917610000001"], "responsible": team.anna.id}),
    )
    .await;
    let answer = app.ringing("note-call", "+4917610000001").await;
    let call_id = answer["call"]["id"].as_str().unwrap().to_owned();
    let the_call = get_as(app, &format!("/api/v1/calls/{call_id}"), &team.anna.token).await;
    let activity = the_call["activity"]
        .as_str()
        .unwrap_or_else(|| panic!("the call links its activity: {the_call}"))
        .to_owned();
    let path = format!("/api/v1/activities/{activity}");

    let note = "Wants an offer for 20 seats.\nCall back on Monday.";
    let (status, body) = patch_as(app, &path, &team.anna.token, json!({"note": note})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let timeline = get_as(
        app,
        &format!("/api/v1/activities?entity=contact:{contact}"),
        &team.anna.token,
    )
    .await;
    assert_eq!(timeline["items"][0]["id"], json!(activity), "{timeline}");
    assert_eq!(timeline["items"][0]["note"], json!(note), "{timeline}");
    assert_eq!(timeline["items"][0]["call"], json!(call_id), "{timeline}");

    let (status, error) = patch_as(
        app,
        &path,
        &team.anna.token,
        json!({"note": "x".repeat(10_001)}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(
        (&error["error"]["code"], &error["error"]["field"]),
        (&json!("too_long"), &json!("note"))
    );

    // Ben may not see Anna's customer: the activity does not exist for him.
    let (status, body) = patch_as(app, &path, &team.ben.token, json!({"note": "mine"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Seeing everything but changing only his own: 403.
    app.put_ok(
        "/api/v1/settings/access",
        json!({"agent_view": "all", "agent_edit": "own"}),
    )
    .await;
    let (status, body) = patch_as(app, &path, &team.ben.token, json!({"note": "mine"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = patch_as(app, &path, &team.anna.token, json!({"note": null})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let timeline = get_as(
        app,
        &format!("/api/v1/activities?entity=contact:{contact}"),
        &team.anna.token,
    )
    .await;
    assert_eq!(timeline["items"][0]["note"], Value::Null, "{timeline}");
    let (status, error) = patch_as(app, &path, &team.anna.token, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
}

/// A PostgreSQL database name for a test: test names can be longer than the 63 bytes of
/// an identifier, so a long one is cut and told apart by a hash of the whole.
fn database_name(test: &str) -> String {
    let hash = test
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("console_{}_{:08x}", &test[..test.len().min(40)], hash as u32)
}

/// Runs each scenario on SQLite and on PostgreSQL: the store's new SQL runs on both.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let app = crate::helpers::TestApp::spawn().await;
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = crate::common::postgres::PgServer::shared();
                    let url = server
                        .create_database(&super::database_name(stringify!($name)))
                        .await;
                    let app = crate::helpers::TestApp::spawn_with_database(&url).await;
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}

on_both!(a1_a2_a_note_on_a_call_needs_the_rights_that_complete_it,);
