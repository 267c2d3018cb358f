//! `PUT /pipelines/{id}/stages`: a pipeline's stages renamed, reordered, added and removed
//! in one request; a stage with deals stays; only admins.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn names(pipeline: &Value) -> Vec<(String, String)> {
    pipeline["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn stages_are_renamed_reordered_added_and_removed_in_one_request() {
    let app = TestApp::spawn().await;
    let pipeline = app
        .post_ok(
            "/api/v1/pipelines",
            json!({"name": "Projects", "stages": [
                {"name": "Lead"}, {"name": "Offer"}, {"name": "Won", "status": "won"}
            ]}),
            StatusCode::CREATED,
        )
        .await;
    let id = pipeline["id"].as_str().unwrap();
    let stage = |i: usize| pipeline["stages"][i]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/pipelines/{id}/stages");

    // Offer first and renamed, Lead dropped, a new Lost stage at the end.
    let (status, body) = app
        .request(
            Method::PUT,
            &path,
            Some(&app.admin),
            Some(json!({"stages": [
                {"id": stage(1), "name": "Proposal"},
                {"id": stage(2), "name": "Won", "status": "won"},
                {"name": "Lost", "status": "lost"},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = [("Proposal", "open"), ("Won", "won"), ("Lost", "lost")]
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(names(&body), expected);
    assert_eq!(body["stages"][0]["id"].as_str().unwrap(), stage(1));
    let read = app.get_ok(&format!("/api/v1/pipelines/{id}")).await;
    assert_eq!(names(&read), expected);

    // A deal in Proposal keeps that stage from being removed.
    let contact = app
        .post_ok(
            "/api/v1/contacts",
            json!({"name": "Kim", "phones": ["+4930111222"]}),
            StatusCode::CREATED,
        )
        .await;
    app.post_ok(
        "/api/v1/deals",
        json!({"name": "Roof", "contact": contact["id"], "pipeline": id, "stage": stage(1)}),
        StatusCode::CREATED,
    )
    .await;
    let won = body["stages"][1]["id"].clone();
    let (status, answer) = app
        .request(
            Method::PUT,
            &path,
            Some(&app.admin),
            Some(json!({"stages": [{"id": won, "name": "Won", "status": "won"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "in_use");
    assert_eq!(
        names(&app.get_ok(&format!("/api/v1/pipelines/{id}")).await),
        expected,
        "a refused change changes nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_stage_lists_name_the_field_and_agents_are_refused() {
    let app = TestApp::spawn().await;
    let pipelines = app.get_ok("/api/v1/pipelines").await;
    let default = &pipelines["items"][0];
    let path = format!(
        "/api/v1/pipelines/{}/stages",
        default["id"].as_str().unwrap()
    );
    let other = app
        .post_ok(
            "/api/v1/pipelines",
            json!({"name": "Other", "stages": [{"name": "One"}]}),
            StatusCode::CREATED,
        )
        .await;
    let cases = [
        (json!({"stages": []}), "stages"),
        (
            json!({"stages": [{"name": "A"}, {"name": "  "}]}),
            "stages[1].name",
        ),
        (
            json!({"stages": [{"id": other["stages"][0]["id"], "name": "X"}]}),
            "stages[0].id",
        ),
        (
            json!({"stages": [
                {"id": default["stages"][0]["id"], "name": "X"},
                {"id": default["stages"][0]["id"], "name": "Y"}
            ]}),
            "stages[1].id",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app
            .request(Method::PUT, &path, Some(&app.admin), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let agent = app
        .create_user("Anna", "anna@firma.test", "agent", "101")
        .await;
    let token = app.token_for(&agent).await;
    let (status, _) = app
        .request(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"stages": [{"name": "Mine"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .request(
            Method::PUT,
            "/api/v1/pipelines/nope/stages",
            Some(&app.admin),
            Some(json!({"stages": [{"name": "A"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
