//! The HTTP contract of API.md: auth, roles, error shape, validation, operations.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a1_agent_cannot_create_numbers_and_no_token_is_401() {
    let app = TestApp::spawn().await;
    let agent = app
        .create_user("Anna", "anna@example.com", "agent", "101")
        .await;
    let token = app.token_for(&agent).await;
    let body = json!({"number": "+4930901820"});

    let (status, err) = app
        .request(
            Method::POST,
            "/api/v1/numbers",
            Some(&token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "forbidden");

    let (status, err) = app
        .request(Method::POST, "/api/v1/numbers", None, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");

    let (status, _) = app
        .request(Method::GET, "/api/v1/leads", Some("ll_not-a-token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The agent can still read CRM data.
    let (status, _) = app
        .request(Method::GET, "/api/v1/leads", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn m5_wildcard_domain_exception_is_refused_with_accepted_forms() {
    let app = TestApp::spawn().await;
    let (status, err) = app
        .request(
            Method::POST,
            "/api/v1/exceptions",
            Some(&app.admin),
            Some(json!({"value": "*@gmail.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["code"], "invalid_domain");
    assert_eq!(err["error"]["field"], "value");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("@gmail.com")
    );

    for value in ["@gmail.com", "gmail.com"] {
        let (status, _) = app
            .request(
                Method::POST,
                "/api/v1/exceptions",
                Some(&app.admin),
                Some(json!({"value": value})),
            )
            .await;
        // The second spelling of the same domain is a duplicate.
        assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT);
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_json_errors_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"number": "+4930901820", "lead_creation": "sometimes"}),
            "lead_creation",
        ),
        (json!({"number": "not a number"}), "number"),
        (
            json!({"number": "+4930901820", "ring_timeout_s": 1}),
            "ring_timeout_s",
        ),
        (json!({"number": "+4930901820", "queue": "nope"}), "queue"),
        (json!({"number": "+4930901820", "colour": "red"}), "."),
    ];
    for (body, field) in cases {
        let (status, err) = app
            .request(
                Method::POST,
                "/api/v1/numbers",
                Some(&app.admin),
                Some(body.clone()),
            )
            .await;
        assert!(status.is_client_error(), "{body} -> {status} {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        if field != "." {
            assert!(
                err["error"]["field"] == field || message.contains(field),
                "{body}: {err}"
            );
        }
    }
    // Malformed JSON is 400, a wrong content type is 415, never a 500.
    let resp = app
        .client
        .post(format!("{}/api/v1/numbers", app.base))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body("{\"number\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app
        .client
        .post(format!("{}/api/v1/numbers", app.base))
        .bearer_auth(&app.admin)
        .body("number=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let app = TestApp::spawn().await;
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024));
    let resp = app
        .client
        .post(format!("{}/api/v1/queues", app.base))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    app.stop().await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = TestApp::spawn().await;
    let (status, health) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health, json!({"status": "ok"}));
    let (status, _) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);

    app.sales_line().await;
    app.ringing("metrics-1", "030 1234567").await;
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("leadline_call_events_total"), "{metrics}");

    let (status, spec) = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/users",
        "/api/v1/users/{id}/tokens",
        "/api/v1/queues",
        "/api/v1/trunks",
        "/api/v1/numbers",
        "/api/v1/settings/crm",
        "/api/v1/exceptions",
        "/api/v1/sources",
        "/api/v1/pipelines",
        "/api/v1/contacts",
        "/api/v1/companies",
        "/api/v1/leads",
        "/api/v1/leads/{id}/convert",
        "/api/v1/deals",
        "/api/v1/match",
        "/api/v1/activities",
        "/api/v1/calls",
        "/api/v1/calls/events",
        "/api/v1/calls/{id}/create-entity",
        "/api/v1/registrations",
        "/api/v1/nodes",
        "/api/v1/contacts/import",
        "/api/v1/privacy/erase",
        "/api/v1/privacy/export",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from /openapi.json"
        );
    }
    let (status, err) = app
        .request(Method::GET, "/api/v1/nothing", Some(&app.admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn secrets_are_never_returned() {
    let app = TestApp::spawn().await;
    let user = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "Anna@Example.com", "role": "agent",
                   "extension": "101", "phones": ["0171 1234567"], "sip_password": "correct horse"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(user["email"], "anna@example.com");
    assert_eq!(user["phones"], json!(["+491711234567"]));
    assert_eq!(user["sip_password_set"], true);
    assert!(user.get("sip_password").is_none());
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "sip.carrier.test",
                   "username": "4930901820", "password": "s3cret!"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(trunk["password_set"], true);
    assert!(!trunk.to_string().contains("s3cret"));
    app.stop().await;
}

#[tokio::test]
async fn m6_employee_phone_and_extension_are_never_leads() {
    let app = TestApp::spawn().await;
    let line = app.sales_line().await;
    app.request(
        Method::PATCH,
        &format!("/api/v1/users/{}", line.anna),
        Some(&app.admin),
        Some(json!({"phones": ["0171 1234567"]})),
    )
    .await;
    for (call, from) in [("emp-1", "+49 171 1234567"), ("emp-2", "101")] {
        let answer = app.ringing(call, from).await;
        assert_eq!(answer["call"]["crm_action"], "logged", "{from}: {answer}");
    }
    assert!(app.leads().await.is_empty());
    let matched = app
        .get_ok("/api/v1/match?phone=0171%201234567&number=%2B4930901820")
        .await;
    assert_eq!(matched["status"], "excluded");
    assert_eq!(matched["identifier"], "+491711234567");
    app.stop().await;
}

#[tokio::test]
async fn m8_match_ranks_contact_before_lead_and_conversion_keeps_one_owner() {
    let app = TestApp::spawn().await;
    app.sales_line().await;
    let answer = app.ringing("conv-1", "030 1234567").await;
    let lead_id = answer["created"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("lead:")
        .to_owned();
    let converted = app
        .post_ok(
            &format!("/api/v1/leads/{lead_id}/convert"),
            json!({"company_name": "Muster GmbH", "create_deal": true}),
            StatusCode::OK,
        )
        .await;
    let contact = converted["contact"].as_str().unwrap();
    assert!(converted["deal"].is_string());

    let matched = app.get_ok("/api/v1/match?phone=%2B49301234567").await;
    assert_eq!(matched["status"], "known");
    assert_eq!(matched["matches"][0]["kind"], "contact");
    assert_eq!(matched["matches"][0]["id"], contact);

    // M7: the number belongs to the contact now; a second contact with it is refused.
    let (status, err) = app
        .request(
            Method::POST,
            "/api/v1/contacts",
            Some(&app.admin),
            Some(json!({"name": "Copy", "phones": ["+49 30 1234567"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "duplicate_identifier");

    // The lead's history follows the customer.
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity=contact:{contact}"))
        .await;
    assert_eq!(timeline["items"].as_array().unwrap().len(), 1);

    // Filters of API.md.
    let by_phone = app.get_ok("/api/v1/contacts?phone=030%201234567").await;
    assert_eq!(by_phone["items"].as_array().unwrap().len(), 1);
    let lead = app.get_ok(&format!("/api/v1/leads/{lead_id}")).await;
    assert_eq!(lead["status"], "converted");
    app.stop().await;
}

#[tokio::test]
async fn lists_page_with_a_cursor() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        app.post_ok(
            "/api/v1/contacts",
            json!({"name": format!("Contact {i}"), "emails": [format!("c{i}@example.com")]}),
            StatusCode::CREATED,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/contacts?limit=2".to_owned();
    loop {
        let page = app.get_ok(&path).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].clone()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/contacts?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let (status, err) = app
        .request(
            Method::GET,
            "/api/v1/contacts?limit=501",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["field"], "limit");
    app.stop().await;
}
