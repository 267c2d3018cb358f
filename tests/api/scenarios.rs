//! The intake scenarios of the spine issue, written once and run on SQLite and on
//! PostgreSQL. Each names the rules it proves.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// T1, M2, T8, T9: an unknown caller in national format creates exactly one lead with the
/// E.164 phone, the number's source and the queue's next member; the same caller in
/// international format is matched and gets an activity, no new lead.
pub async fn t1_new_caller_creates_one_lead_then_is_matched(app: &TestApp) {
    let line = app.sales_line().await;

    let first = app.ringing("call-1", "030 1234567").await;
    assert_eq!(first["call"]["crm_action"], "created", "{first}");
    let created = first["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{first}");
    let lead_ref = created[0].as_str().unwrap();
    assert!(lead_ref.starts_with("lead:"), "{lead_ref}");
    // T9: the very first call goes to the first member, who also rings first.
    assert_eq!(first["route"], json!([line.anna, line.ben]));

    let leads = app.leads().await;
    assert_eq!(leads.len(), 1);
    let lead = &leads[0];
    assert_eq!(lead["phones"], json!(["+49301234567"]));
    assert_eq!(lead["source"], "CALL");
    assert_eq!(lead["responsible"], json!(line.anna));
    assert_eq!(lead["status"], "new");

    let second = app.ringing("call-2", "+49 30 1234567").await;
    assert_eq!(second["call"]["crm_action"], "attached", "{second}");
    assert_eq!(second["created"], json!([]));
    assert_eq!(second["matches"][0]["id"], lead["id"]);
    // T5: the known caller's responsible rings first.
    assert_eq!(second["route"][0], json!(line.anna));
    assert_eq!(app.leads().await.len(), 1, "no second lead (M7)");

    let lead_id = lead["id"].as_str().unwrap();
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity=lead:{lead_id}"))
        .await;
    let items = timeline["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{timeline}");
    assert!(items.iter().all(|a| a["kind"] == "call"));
    assert_eq!(items[0]["matched"], json!(format!("lead:{lead_id}")));

    // T9: the next new caller goes to the next member.
    let other = app.ringing("call-3", "030 7654321").await;
    assert_eq!(other["route"][0], json!(line.ben), "{other}");
}

/// T3, T12: simple mode creates a contact and a deal in the default pipeline's first stage.
pub async fn t3_simple_mode_creates_contact_and_deal(app: &TestApp) {
    app.sales_line().await;
    app.put_ok("/api/v1/settings/crm", json!({"mode": "simple"}))
        .await;
    let answer = app.ringing("simple-1", "0221 5550100").await;
    let created: Vec<&str> = answer["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 2, "{answer}");
    assert!(created[0].starts_with("contact:"));
    assert!(created[1].starts_with("deal:"));
    let deal_id = created[1].trim_start_matches("deal:");
    let deal = app.get_ok(&format!("/api/v1/deals/{deal_id}")).await;
    assert_eq!(deal["pipeline"], "default");
    assert_eq!(deal["stage"], "default-new");
    assert_eq!(deal["status"], "open");
    assert_eq!(
        deal["contact"],
        json!(created[0].trim_start_matches("contact:"))
    );
    assert!(app.leads().await.is_empty(), "simple mode creates no lead");

    // T11: the known contact with an open deal gets the activity on both.
    let again = app.ringing("simple-2", "+492215550100").await;
    assert_eq!(again["call"]["crm_action"], "attached", "{again}");
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity=deal:{deal_id}"))
        .await;
    assert_eq!(timeline["items"].as_array().unwrap().len(), 2, "{timeline}");
}

/// T6, M4, T1: an exception number creates nothing but is in the call log.
pub async fn t6_exception_number_is_logged_only(app: &TestApp) {
    app.sales_line().await;
    let exception = app
        .post_ok(
            "/api/v1/exceptions",
            json!({"value": "030 9999999"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(exception["kind"], "phone");
    assert_eq!(exception["value"], "+49309999999");

    let answer = app.ringing("exc-1", "+49 30 9999999").await;
    assert_eq!(answer["call"]["crm_action"], "logged", "{answer}");
    assert_eq!(answer["created"], json!([]));
    assert!(app.leads().await.is_empty());
    let calls = app.get_ok("/api/v1/calls").await;
    let logged = calls["items"].as_array().unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["call_id"], "exc-1");
    assert_eq!(logged[0]["customer"], "+49309999999");
    assert!(logged[0]["activity"].is_null());
}

/// API.md: events are idempotent per (call_id, event).
pub async fn repeated_event_creates_nothing_new(app: &TestApp) {
    app.sales_line().await;
    let first = app.ringing("dup-1", "089 123456").await;
    let again = app.ringing("dup-1", "089 123456").await;
    assert_eq!(again["repeated"], true);
    assert_eq!(first["created"], again["created"]);
    assert_eq!(first["route"], again["route"]);
    assert_eq!(app.leads().await.len(), 1);
    let calls = app.get_ok("/api/v1/calls").await;
    assert_eq!(calls["items"].as_array().unwrap().len(), 1);
}

/// T13: answered and ended complete the call; a missed incoming call leaves an open
/// "call back" activity for the responsible.
pub async fn t13_call_lifecycle_and_missed_call(app: &TestApp) {
    let line = app.sales_line().await;
    app.ringing("life-1", "040 111222").await;
    let event = |event: &str, extra: Value| {
        let mut body = json!({"call_id": "life-1", "event": event, "direction": "incoming",
                              "from": "040 111222", "to": "+4930901820"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    app.post_ok(
        "/api/v1/calls/events",
        event(
            "answered",
            json!({"user": line.anna, "at": "2026-11-23T10:00:00Z"}),
        ),
        StatusCode::OK,
    )
    .await;
    let ended = app
        .post_ok(
            "/api/v1/calls/events",
            event("ended", json!({"at": "2026-11-23T10:02:05Z"})),
            StatusCode::OK,
        )
        .await;
    let call = &ended["call"];
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["answered_by"], json!(line.anna));
    assert_eq!(call["duration_s"], 125);
    let activity = call["activity"].as_str().unwrap();

    app.ringing("life-2", "040 111222").await;
    let missed = app
        .post_ok(
            "/api/v1/calls/events",
            json!({"call_id": "life-2", "event": "ended", "direction": "incoming",
                   "from": "040 111222", "to": "+4930901820"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(missed["call"]["outcome"], "missed");
    let lead = &app.leads().await[0];
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity=lead:{}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    let items = timeline["items"].as_array().unwrap();
    let answered = items.iter().find(|a| a["id"] == activity).unwrap();
    assert_eq!(answered["completed"], true);
    let call_back = items.iter().find(|a| a["id"] != activity).unwrap();
    assert_eq!(call_back["completed"], false, "{call_back}");
    assert!(
        call_back["subject"]
            .as_str()
            .unwrap()
            .starts_with("Call back")
    );
    assert_eq!(call_back["responsible"], json!(line.anna));
}

/// One missed call per attempt leaves one open "call back"; it closes by
/// itself when the customer calls again and is answered.
pub async fn missed_call_back_closes_when_the_customer_is_reached(app: &TestApp) {
    let line = app.sales_line().await;
    let step = |call_id: &str, event: &str, extra: Value| {
        let mut body = json!({"call_id": call_id, "event": event, "direction": "incoming",
                              "from": "040 333444", "to": "+4930901820"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    app.ringing("back-1", "040 333444").await;
    let missed = app
        .post_ok(
            "/api/v1/calls/events",
            step("back-1", "ended", json!({})),
            StatusCode::OK,
        )
        .await;
    let call_back = missed["call"]["activity"].as_str().unwrap().to_owned();
    let lead = app.leads().await[0]["id"].as_str().unwrap().to_owned();
    let open = |items: &Value| {
        items["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["completed"] == false)
            .count()
    };
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity=lead:{lead}"))
        .await;
    assert_eq!(open(&timeline), 1, "one call back: {timeline}");

    app.ringing("back-2", "+49 40 333444").await;
    app.post_ok(
        "/api/v1/calls/events",
        step("back-2", "answered", json!({"user": line.ben})),
        StatusCode::OK,
    )
    .await;
    app.post_ok(
        "/api/v1/calls/events",
        step("back-2", "ended", json!({"user": line.ben})),
        StatusCode::OK,
    )
    .await;
    let timeline = app
        .get_ok(&format!("/api/v1/activities?entity=lead:{lead}"))
        .await;
    assert_eq!(
        open(&timeline),
        0,
        "reached: nothing left to call back: {timeline}"
    );
    let closed = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == json!(call_back))
        .unwrap()
        .clone();
    assert_eq!(closed["completed"], true, "{closed}");
}

/// T4: manual lead creation offers, and the agent creates the lead from the call window.
pub async fn t4_manual_mode_creates_on_request(app: &TestApp) {
    let line = app.sales_line().await;
    let (status, _) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/numbers/{}", line.number),
            Some(&app.admin),
            Some(json!({"lead_creation": "manual"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer = app.ringing("manual-1", "030 5550000").await;
    assert_eq!(answer["call"]["crm_action"], "offered");
    assert!(app.leads().await.is_empty());

    let agent = app.token_for(&line.ben).await;
    let call_id = answer["call"]["id"].as_str().unwrap();
    let (status, created) = app
        .request(
            Method::POST,
            &format!("/api/v1/calls/{call_id}/create-entity"),
            Some(&agent),
            Some(json!({"kind": "lead"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let leads = app.leads().await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["responsible"], json!(line.ben));
    assert_eq!(leads[0]["phones"], json!(["+49305550000"]));
    assert_eq!(created["call"]["crm_action"], "created");
}

/// T1, API.md idempotency: the steps of one call arriving at the same moment (PBXs send
/// them from several threads) log the call once and create one lead.
pub async fn concurrent_steps_of_one_call_log_it_once(app: &TestApp) {
    let line = app.sales_line().await;
    let mut tasks = Vec::new();
    for round in 0..5 {
        for event in ["ringing", "answered", "ended"] {
            let request = app
                .client
                .post(format!("{}/api/v1/calls/events", app.base))
                .bearer_auth(&app.admin)
                .json(&json!({"call_id": format!("steps-{round}"), "event": event,
                              "direction": "incoming", "from": "030 4444444",
                              "to": "+4930901820", "user": line.ben}));
            tasks.push(tokio::spawn(async move {
                let resp = request.send().await.expect("sent");
                (resp.status(), resp.text().await.unwrap_or_default())
            }));
        }
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(app.leads().await.len(), 1);
    let calls = app.get_ok("/api/v1/calls").await;
    let calls = calls["items"].as_array().unwrap();
    assert_eq!(calls.len(), 5, "one log row per call");
    for call in calls {
        assert_eq!(call["answered_by"], json!(line.ben), "{call}");
        // Whatever order the steps arrived in, the call was answered.
        assert_eq!(call["outcome"], "answered", "{call}");
    }
}

/// T10: with "change the responsible person when the call is transferred", the employee
/// who answers a call that created a lead becomes its responsible; without it, not.
pub async fn t10_transfer_changes_responsible_when_enabled(app: &TestApp) {
    let line = app.sales_line().await;
    let answered_by_ben = |call_id: &str| {
        json!({"call_id": call_id, "event": "answered", "direction": "incoming",
               "from": "030 2223333", "to": "+4930901820", "user": line.ben})
    };
    // Off (the default): Anna, the queue's pick, stays responsible.
    app.ringing("transfer-off", "030 2223333").await;
    app.post_ok(
        "/api/v1/calls/events",
        answered_by_ben("transfer-off"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.leads().await[0]["responsible"], json!(line.anna));

    let (status, _) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/numbers/{}", line.number),
            Some(&app.admin),
            Some(json!({"change_responsible_on_transfer": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // On: a new caller goes to the next in turn (Ben), is transferred and answered by
    // Anna, who takes the lead over.
    let opened = app.ringing("transfer-on", "030 4445555").await;
    let lead_ref = opened["created"][0].as_str().unwrap().to_owned();
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": "transfer-on", "event": "answered", "direction": "incoming",
               "from": "030 4445555", "to": "+4930901820", "user": line.anna}),
        StatusCode::OK,
    )
    .await;
    let lead = app
        .get_ok(&format!(
            "/api/v1/leads/{}",
            lead_ref.trim_start_matches("lead:")
        ))
        .await;
    assert_eq!(lead["responsible"], json!(line.anna), "{lead}");
    let call = &app.get_ok("/api/v1/calls").await["items"][0];
    assert_eq!(call["responsible"], json!(line.anna), "{call}");
}
