//! Agents' presence over HTTP: set by the person or an admin, read by every employee,
//! published on the event stream and audited; the live view of a queue. On SQLite, and
//! the set/read round trip on PostgreSQL.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::calls_sip::CallWindow;
use crate::common::postgres::PgServer;
use crate::helpers::TestApp;

/// Anna and Ben (agents) with a token each.
struct Team {
    anna: String,
    ben: String,
    anna_token: String,
    ben_token: String,
}

async fn team(app: &TestApp) -> Team {
    let anna = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    Team {
        anna_token: app.token_for(&anna).await,
        ben_token: app.token_for(&ben).await,
        anna,
        ben,
    }
}

fn presence_of<'a>(list: &'a Value, user: &str) -> &'a Value {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["user"] == user)
        .unwrap_or_else(|| panic!("{user} is missing from {list}"))
}

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

/// Sets and reads presence the way the console does; shared by both databases.
async fn set_and_read(app: &TestApp, team: &Team) {
    let path = format!("/api/v1/users/{}/presence", team.anna);
    let (status, item) = app
        .request(
            Method::PUT,
            &path,
            Some(&team.anna_token),
            Some(json!({"status": "paused", "reason": " lunch "})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["user"], team.anna.as_str());
    assert_eq!(item["status"], "paused");
    assert_eq!(item["reason"], "lunch");
    assert!(is_rfc3339(&item["since"]), "{item}");
    assert_eq!(item["devices"], 0);
    assert_eq!(item["in_call"], false);
    assert_eq!(item["wrap_up_until"], Value::Null);

    let (status, list) = app
        .request(Method::GET, "/api/v1/presence", Some(&team.ben_token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "an agent reads everyone's: {list}");
    let anna = presence_of(&list, &team.anna);
    assert_eq!(anna["status"], "paused");
    assert_eq!(anna["reason"], "lunch");
    assert_eq!(anna["since"], item["since"]);
    let ben = presence_of(&list, &team.ben);
    assert_eq!(ben["status"], "available", "the default");
    assert_eq!(ben["reason"], Value::Null);
    assert_eq!(ben["since"], Value::Null, "never set");
    for field in [
        "user",
        "status",
        "reason",
        "since",
        "devices",
        "in_call",
        "wrap_up_until",
    ] {
        assert!(ben.get(field).is_some(), "{field} missing from {ben}");
    }

    // An admin sets anyone's; a reason without a pause is not kept.
    let item = app
        .put_ok(&path, json!({"status": "available", "reason": "back"}))
        .await;
    assert_eq!(item["status"], "available");
    assert_eq!(item["reason"], Value::Null);
    let list = app.get_ok("/api/v1/presence").await;
    assert_eq!(presence_of(&list, &team.anna)["status"], "available");
}

#[tokio::test]
async fn presence_is_set_by_the_person_or_an_admin_read_by_employees_and_audited() {
    let app = TestApp::spawn().await;
    let team = team(&app).await;
    set_and_read(&app, &team).await;

    let audit = app
        .get_ok(&format!("/api/v1/audit?object=user:{}", team.anna))
        .await;
    let changes: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "PUT /api/v1/users/{id}/presence")
        .collect();
    assert_eq!(changes.len(), 2, "the agent's and the admin's: {audit}");
    assert_eq!(changes[1]["actor"], format!("user:{}", team.anna));
    assert_eq!(changes[1]["fields"], json!(["reason", "status"]));
    assert_eq!(changes[0]["actor"], "bootstrap");
    app.stop().await;
}

#[tokio::test]
async fn presence_refuses_others_unknown_people_and_bad_input() {
    let app = TestApp::spawn().await;
    let team = team(&app).await;

    let (status, err) = app
        .request(
            Method::PUT,
            &format!("/api/v1/users/{}/presence", team.ben),
            Some(&team.anna_token),
            Some(json!({"status": "offline"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an agent sets only their own: {err}"
    );

    let (status, err) = app
        .request(
            Method::PUT,
            "/api/v1/users/nobody/presence",
            Some(&app.admin),
            Some(json!({"status": "offline"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    let own = format!("/api/v1/users/{}/presence", team.anna);
    let (status, err) = app
        .request(
            Method::PUT,
            &own,
            Some(&team.anna_token),
            Some(json!({"status": "busy"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "invalid_status");
    assert_eq!(err["error"]["field"], "status");
    let message = err["error"]["message"].as_str().unwrap();
    for choice in ["available", "paused", "offline"] {
        assert!(message.contains(choice), "{message}");
    }

    let (status, err) = app
        .request(
            Method::PUT,
            &own,
            Some(&team.anna_token),
            Some(json!({"status": "paused", "reason": "x".repeat(201)})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "reason");

    let list = app.get_ok("/api/v1/presence").await;
    assert_eq!(
        presence_of(&list, &team.anna)["status"],
        "available",
        "a refused change changed nothing"
    );
    let audit = app
        .get_ok(&format!("/api/v1/audit?object=user:{}", team.anna))
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "PUT /api/v1/users/{id}/presence"),
        "refused changes are not audited: {audit}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_presence_change_arrives_on_an_open_event_stream() {
    let app = TestApp::spawn().await;
    let team = team(&app).await;
    let mut window = CallWindow::open(&app, &team.ben_token).await;

    let (status, item) = app
        .request(
            Method::PUT,
            &format!("/api/v1/users/{}/presence", team.anna),
            Some(&team.anna_token),
            Some(json!({"status": "paused", "reason": "training"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{item}");

    let seen = window
        .read_until("event: presence", Duration::from_secs(10))
        .await
        .to_owned();
    let data = seen
        .split("event: presence")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("no presence event: {seen}"));
    let update: Value = serde_json::from_str(data).expect("JSON data");
    assert_eq!(
        update,
        json!({"user": team.anna, "status": "paused", "reason": "training",
               "since": item["since"]})
    );
    app.stop().await;
}

#[tokio::test]
async fn the_live_view_of_a_queue_without_calls_shows_its_members_to_admins_and_members() {
    let app = TestApp::spawn().await;
    let team = team(&app).await;
    let carl = app
        .create_user("Carl", "carl@example.com", "agent", "103")
        .await;
    let queue = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [team.ben, team.anna]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.put_ok(
        &format!("/api/v1/users/{}/presence", team.anna),
        json!({"status": "offline"}),
    )
    .await;
    let live_path = format!("/api/v1/queues/{queue}/live");

    let live = app.get_ok(&live_path).await;
    assert_eq!(
        live,
        json!({"waiting": [], "agents": [
            {"user": team.ben, "status": "available", "in_call": false},
            {"user": team.anna, "status": "offline", "in_call": false},
        ]}),
        "members in turn order"
    );
    let (status, as_member) = app
        .request(Method::GET, &live_path, Some(&team.anna_token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{as_member}");
    assert_eq!(as_member, live);

    let carl_token = app.token_for(&carl).await;
    let (status, err) = app
        .request(Method::GET, &live_path, Some(&carl_token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not a member: {err}");
    let (status, err) = app
        .request(
            Method::GET,
            "/api/v1/queues/nothing/live",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    app.stop().await;
}

#[tokio::test]
async fn presence_round_trips_on_postgresql() {
    let server = PgServer::shared();
    let url = server
        .create_database("presence_round_trips_on_postgresql")
        .await;
    let app = TestApp::spawn_with_database(&url).await;
    let team = team(&app).await;
    set_and_read(&app, &team).await;
    app.stop().await;
}
