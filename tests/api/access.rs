//! Issue 8, first slice: the agent role's access levels as an account setting.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

/// `own` by default; only admins change it; edit never wider than view.
#[tokio::test]
async fn access_levels_default_to_own_and_only_admins_change_them() {
    let app = TestApp::spawn().await;
    let settings = app.get_ok("/api/v1/settings/access").await;
    assert_eq!(settings, json!({"agent_view": "own", "agent_edit": "own"}));

    let agent = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app
        .post_ok(
            &format!("/api/v1/users/{agent}/tokens"),
            json!({"name": "t"}),
            StatusCode::CREATED,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/settings/access",
            Some(&token),
            Some(json!({"agent_view": "all"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, seen) = app
        .request(Method::GET, "/api/v1/settings/access", Some(&token), None)
        .await;
    assert_eq!(
        (status, seen["agent_view"].clone()),
        (StatusCode::OK, json!("own"))
    );

    let changed = app
        .put_ok("/api/v1/settings/access", json!({"agent_view": "queue"}))
        .await;
    assert_eq!(changed, json!({"agent_view": "queue", "agent_edit": "own"}));
    let (status, error) = app
        .request(
            Method::PUT,
            "/api/v1/settings/access",
            Some(&app.admin),
            Some(json!({"agent_edit": "all"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "edit_wider_than_view");
    let (status, error) = app
        .request(
            Method::PUT,
            "/api/v1/settings/access",
            Some(&app.admin),
            Some(json!({"agent_view": "everyone"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "agent_view", "{error}");
}
