//! The dashboard's statistics: call counts by hour, number, queue and agent, the hourly
//! chart as SVG, and the e-mail counts; with the call log's visibility for agents (A1/A2).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::postgres::PgServer;
use crate::helpers::{SalesLine, TestApp};

const SALES: &str = "+4930901820";
const SUPPORT: &str = "+4930901821";
const DAY: &str = "from=2026-11-23&to=2026-11-23";

/// Pushes one incoming call: `ringing` at `at` (a time on 2026-11-23 unless it has a
/// date), then, if given, `answered` by `answered_by` and `ended` with `outcome`.
/// Answers the call as the log shows it.
async fn call(
    app: &TestApp,
    id: &str,
    from: &str,
    to: &str,
    at: &str,
    answered_by: Option<&str>,
    outcome: Option<&str>,
) -> Value {
    let at = if at.contains('T') {
        at.to_owned()
    } else {
        format!("2026-11-23T{at}Z")
    };
    let event = |event: &str| {
        json!({"call_id": id, "event": event, "direction": "incoming", "from": from,
               "to": to, "at": at})
    };
    let mut last = app
        .post_ok("/api/v1/calls/events", event("ringing"), StatusCode::OK)
        .await;
    if let Some(user) = answered_by {
        let mut body = event("answered");
        body["user"] = json!(user);
        last = app
            .post_ok("/api/v1/calls/events", body, StatusCode::OK)
            .await;
    }
    if let Some(outcome) = outcome {
        let mut body = event("ended");
        body["outcome"] = json!(outcome);
        last = app
            .post_ok("/api/v1/calls/events", body, StatusCode::OK)
            .await;
    }
    last["call"].clone()
}

/// The sales line, plus a support line whose queue has only Ben: its calls never ring
/// Anna. Answers (line, support queue id).
async fn two_lines(app: &TestApp) -> (SalesLine, String) {
    let line = app.sales_line().await;
    let support = app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Support", "members": [line.ben]}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": SUPPORT, "default_country": "DE", "queue": support}),
        StatusCode::CREATED,
    )
    .await;
    (line, support)
}

/// The day's calls: on sales, one answered by Anna at 09:10, one missed at 09:40, one busy
/// at 14:05, one still ringing at 14:30; on support, one answered by Ben at 09:20 and one
/// cancelled at 17:00; plus a call the day before and an outgoing call, neither counted.
async fn the_days_calls(app: &TestApp, line: &SalesLine) -> Vec<Value> {
    let calls = vec![
        call(
            app,
            "s1",
            "030 1111111",
            SALES,
            "09:10:00",
            Some(&line.anna),
            Some("answered"),
        )
        .await,
        call(
            app,
            "s2",
            "030 2222222",
            SALES,
            "09:40:00",
            None,
            Some("missed"),
        )
        .await,
        call(
            app,
            "s3",
            "030 3333333",
            SALES,
            "14:05:00",
            None,
            Some("busy"),
        )
        .await,
        call(app, "s4", "030 4444444", SALES, "14:30:00", None, None).await,
        call(
            app,
            "h1",
            "030 5555555",
            SUPPORT,
            "09:20:00",
            Some(&line.ben),
            Some("answered"),
        )
        .await,
        call(
            app,
            "h2",
            "030 6666666",
            SUPPORT,
            "17:00:00",
            None,
            Some("cancelled"),
        )
        .await,
    ];
    call(
        app,
        "old",
        "030 7777777",
        SALES,
        "2026-11-22T09:00:00Z",
        None,
        Some("missed"),
    )
    .await;
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": "out", "event": "ringing", "direction": "outgoing",
               "from": SALES, "to": "030 8888888", "user": line.anna,
               "at": "2026-11-23T09:30:00Z"}),
        StatusCode::OK,
    )
    .await;
    calls
}

async fn get(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    app.request(Method::GET, path, Some(token), None).await
}

async fn stats(app: &TestApp, query: &str, token: &str) -> Vec<(String, [u64; 3])> {
    let (status, body) = get(app, &format!("/api/v1/stats/calls?{query}"), token).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let n = |f: &str| i[f].as_u64().unwrap();
            (
                i["key"].as_str().unwrap().to_owned(),
                [n("offered"), n("answered"), n("missed")],
            )
        })
        .collect()
}

fn hour(items: &[(String, [u64; 3])], key: &str) -> [u64; 3] {
    items.iter().find(|(k, _)| k == key).unwrap().1
}

#[tokio::test]
async fn calls_are_counted_by_hour_number_queue_and_agent() {
    let app = TestApp::spawn().await;
    counted_by_hour_number_queue_and_agent(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn calls_are_counted_by_hour_number_queue_and_agent_on_postgresql() {
    let url = PgServer::shared()
        .create_database("stats_calls_are_counted")
        .await;
    let app = TestApp::spawn_with_database(&url).await;
    counted_by_hour_number_queue_and_agent(&app).await;
    app.stop().await;
}

async fn counted_by_hour_number_queue_and_agent(app: &TestApp) {
    let (line, support) = two_lines(app).await;
    let calls = the_days_calls(app, &line).await;
    let admin = app.admin.clone();

    let hours = stats(app, &format!("{DAY}&by=hour"), &admin).await;
    let keys: Vec<&str> = hours.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, (0..24).map(|h| format!("{h:02}")).collect::<Vec<_>>());
    assert_eq!(hour(&hours, "09"), [3, 2, 1]);
    assert_eq!(
        hour(&hours, "14"),
        [2, 0, 1],
        "a ringing call is offered only"
    );
    assert_eq!(hour(&hours, "17"), [1, 0, 1]);
    assert_eq!(hours.iter().map(|(_, c)| c[0]).sum::<u64>(), 6);
    // `by` defaults to the hour.
    assert_eq!(stats(app, DAY, &admin).await, hours);

    assert_eq!(
        stats(app, &format!("{DAY}&by=number"), &admin).await,
        [
            (SALES.to_owned(), [4, 1, 2]),
            (SUPPORT.to_owned(), [2, 1, 1])
        ]
    );
    let queues = stats(app, &format!("{DAY}&by=queue"), &admin).await;
    assert_eq!(queues.len(), 2);
    assert_eq!(hour(&queues, &support), [2, 1, 1]);
    assert_eq!(queues[0].1, [4, 1, 2], "the busiest queue first");

    // An agent is who answered, else who is responsible for the customer.
    let mut expected: Vec<(String, [u64; 3])> = Vec::new();
    for c in &calls {
        let Some(agent) = c["answered_by"].as_str().or(c["responsible"].as_str()) else {
            continue;
        };
        let counts = [
            1,
            u64::from(c["outcome"] == "answered"),
            u64::from(c["outcome"].is_string() && c["outcome"] != "answered"),
        ];
        match expected.iter_mut().find(|(k, _)| k == agent) {
            Some((_, sum)) => (0..3).for_each(|i| sum[i] += counts[i]),
            None => expected.push((agent.to_owned(), counts)),
        }
    }
    let mut agents = stats(app, &format!("{DAY}&by=agent"), &admin).await;
    agents.sort();
    expected.sort();
    assert_eq!(agents, expected);
    assert_eq!(hour(&agents, &line.anna)[1], 1);
    assert_eq!(hour(&agents, &line.ben)[1], 1);

    // The day before has only its own call.
    let before = stats(app, "from=2026-11-22&to=2026-11-22&by=number", &admin).await;
    assert_eq!(before, [(SALES.to_owned(), [1, 0, 1])]);
    // An RFC 3339 range: 09:00 to 09:30 holds the calls at 09:10 and 09:20.
    let half_hour = stats(
        app,
        "from=2026-11-23T10:00:00%2B01:00&to=2026-11-23T09:30:00Z&by=number",
        &admin,
    )
    .await;
    assert_eq!(half_hour.iter().map(|(_, c)| c[0]).sum::<u64>(), 2);
}

#[tokio::test]
async fn a1_a2_an_agent_at_own_counts_only_the_calls_of_their_call_log() {
    let app = TestApp::spawn().await;
    agent_counts_only_their_call_log(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a1_a2_an_agent_at_own_counts_only_the_calls_of_their_call_log_on_postgresql() {
    let url = PgServer::shared()
        .create_database("stats_agent_counts_only_their_calls")
        .await;
    let app = TestApp::spawn_with_database(&url).await;
    agent_counts_only_their_call_log(&app).await;
    app.stop().await;
}

async fn agent_counts_only_their_call_log(app: &TestApp) {
    let (line, support) = two_lines(app).await;
    the_days_calls(app, &line).await;
    let anna = app.token_for(&line.anna).await;
    assert_eq!(
        app.get_ok("/api/v1/settings/access").await["agent_view"],
        "own"
    );

    // Anna's calls: the sales calls ring her queue; support calls never reach her.
    let (status, log) = get(app, "/api/v1/calls?limit=500", &anna).await;
    assert_eq!(status, StatusCode::OK);
    let seen: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["direction"] == "incoming"
                && c["started_at"].as_str().unwrap().starts_with("2026-11-23")
        })
        .collect();
    assert!(seen.iter().all(|c| c["number"] == SALES), "{log}");

    let hours = stats(app, DAY, &anna).await;
    assert_eq!(hours.len(), 24);
    assert_eq!(hour(&hours, "09"), [2, 1, 1], "not Ben's support call");
    assert_eq!(hour(&hours, "17"), [0, 0, 0]);
    assert_eq!(
        hours.iter().map(|(_, c)| c[0]).sum::<u64>(),
        seen.len() as u64,
        "the figures cover exactly the calls of her call log"
    );
    assert_eq!(
        stats(app, &format!("{DAY}&by=number"), &anna).await,
        [(SALES.to_owned(), [4, 1, 2])]
    );
    let queues = stats(app, &format!("{DAY}&by=queue"), &anna).await;
    assert!(queues.iter().all(|(k, _)| k != &support), "{queues:?}");

    // At `all` she sees what an admin sees.
    app.put_ok("/api/v1/settings/access", json!({"agent_view": "all"}))
        .await;
    assert_eq!(
        stats(app, &format!("{DAY}&by=number"), &anna).await,
        stats(app, &format!("{DAY}&by=number"), &app.admin).await
    );

    // Trunk tokens push call events and read nothing (A1).
    let trunk = app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Office PBX", "kind": "pbx", "username": "office-pbx",
                   "password": "trunk-secret-9"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trunk_token = app
        .post_ok(
            &format!("/api/v1/trunks/{trunk}/tokens"),
            json!({}),
            StatusCode::CREATED,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in ["/api/v1/stats/calls", "/api/v1/stats/calls/chart.svg"] {
        let (status, body) = get(app, path, &trunk_token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
}

#[tokio::test]
async fn stats_ranges_and_groupings_are_checked() {
    let app = TestApp::spawn().await;
    let admin = app.admin.clone();
    for (query, code, field) in [
        ("from=2026-11-23&to=2026-11-22", "invalid_range", "to"),
        (
            "from=2026-11-23T10:00:00Z&to=2026-11-23T09:59:59Z",
            "invalid_range",
            "to",
        ),
        ("from=2025-01-01&to=2026-01-02", "range_too_long", "to"),
        ("by=day", "invalid_group", "by"),
    ] {
        for path in ["/api/v1/stats/calls", "/api/v1/stats/calls/chart.svg"] {
            if path.ends_with("svg") && query.starts_with("by") {
                continue;
            }
            let (status, body) = get(&app, &format!("{path}?{query}"), &admin).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
            assert_eq!(body["error"]["code"], code, "{query}: {body}");
            assert_eq!(body["error"]["field"], field, "{query}: {body}");
        }
    }
    // Unreadable bounds are malformed queries, as in the call log.
    for (query, field) in [("from=23.11.2026", "from"), ("to=yesterday", "to")] {
        let (status, body) = get(&app, &format!("/api/v1/stats/calls?{query}"), &admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    // 366 days are allowed; no bounds is today, with nothing in it.
    let year = stats(&app, "from=2024-01-01&to=2024-12-31&by=agent", &admin).await;
    assert!(year.is_empty());
    let today = stats(&app, "", &admin).await;
    assert_eq!(today.len(), 24);
    let (_, spec) = app.request(Method::GET, "/openapi.json", None, None).await;
    for path in ["/api/v1/stats/calls", "/api/v1/stats/calls/chart.svg"] {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} is documented"
        );
    }
    app.stop().await;
}

async fn chart(app: &TestApp, token: &str, lang: Option<&str>) -> (String, String, String) {
    let mut req = app
        .client
        .get(format!("{}/api/v1/stats/calls/chart.svg?{DAY}", app.base))
        .bearer_auth(token);
    if let Some(lang) = lang {
        req = req.header("Accept-Language", lang);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, cache) = (header("content-type"), header("cache-control"));
    (content_type, cache, resp.text().await.unwrap())
}

#[tokio::test]
async fn a1_a2_the_chart_draws_the_hours_bars_of_the_calls_the_reader_sees_in_their_language() {
    let app = TestApp::spawn().await;
    let (line, _) = two_lines(&app).await;
    the_days_calls(&app, &line).await;

    let (content_type, cache, svg) = chart(&app, &app.admin, None).await;
    assert_eq!(content_type, "image/svg+xml");
    assert_eq!(cache, "no-store");
    assert!(
        svg.starts_with("<svg ") && svg.contains(r#"role="img""#),
        "{svg}"
    );
    // Answered at 09 (two calls, one bar); missed at 09, 14 and 17.
    assert_eq!(svg.matches(r#"<rect class="bar answered""#).count(), 1);
    assert_eq!(svg.matches(r#"<rect class="bar missed""#).count(), 3);
    assert!(svg.contains(r#"class="bar answered" data-hour="09" data-count="2""#));
    assert!(svg.contains(r#"aria-label="Calls today by hour: 2 Answered, 3 Missed""#));
    assert!(!svg.contains("<script") && !svg.contains("style="));

    let (_, _, german) = chart(&app, &app.admin, Some("de-DE,de;q=0.9,en;q=0.5")).await;
    assert!(
        german.contains("Angenommen") && german.contains("Verpasst"),
        "{german}"
    );
    assert!(
        german.contains("<title>Anrufe heute nach Stunde"),
        "{german}"
    );

    // Anna at `own` does not see the support line's calls: no bar at 17.
    let anna = app.token_for(&line.anna).await;
    let (_, _, hers) = chart(&app, &anna, None).await;
    assert!(hers.contains(r#"class="bar answered" data-hour="09" data-count="1""#));
    assert!(!hers.contains(r#"data-hour="17""#), "{hers}");
    assert_eq!(hers.matches(r#"<rect class="bar missed""#).count(), 2);

    // A day without calls still draws the axes, with the message.
    let resp = app
        .client
        .get(format!(
            "{}/api/v1/stats/calls/chart.svg?from=2026-01-01&to=2026-01-01",
            app.base
        ))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let empty = resp.text().await.unwrap();
    assert!(empty.contains(">No calls yet</text>"), "{empty}");
    assert!(!empty.contains("class=\"bar "));
    app.stop().await;
}

/// Hands `count` messages to the forward address over SMTP, as a mail server would; each
/// `250` after the data means it is stored (E16).
async fn send_to_forward_address(app: &TestApp, count: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let address = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let smtp = app.app.as_ref().unwrap().smtp_addr;
    let stream = tokio::net::TcpStream::connect(smtp).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // A reply ends with the line whose code is followed by a space.
    let mut reply = async move || -> String {
        loop {
            let line = lines.next_line().await.unwrap().expect("a reply");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    };
    assert!(reply().await.starts_with("220"));
    let mut say = async |text: String, expect: &str| {
        write.write_all(text.as_bytes()).await.unwrap();
        let line = reply().await;
        assert!(line.starts_with(expect), "{text:?} → {line}");
    };
    say("EHLO mailer.example\r\n".into(), "250").await;
    for n in 0..count {
        say("MAIL FROM:<kunde@kunde.example>\r\n".into(), "250").await;
        say(format!("RCPT TO:<{address}>\r\n"), "250").await;
        say("DATA\r\n".into(), "354").await;
        say(
            format!(
                "From: Kunde <kunde@kunde.example>\r\nTo: {address}\r\nSubject: Anfrage {n}\r\n\
                 Message-ID: <stats-{n}@kunde.example>\r\n\r\nHallo\r\n.\r\n"
            ),
            "250",
        )
        .await;
    }
    say("QUIT\r\n".into(), "221").await;
}

#[tokio::test]
async fn emails_taken_in_are_counted_by_mailbox_for_admins() {
    let app = TestApp::spawn().await;
    let line = app.sales_line().await;
    send_to_forward_address(&app, 2).await;

    let today = app.get_ok("/api/v1/stats/emails").await;
    assert_eq!(
        today,
        json!({"ingested": 2, "by_mailbox": [{"mailbox": null, "ingested": 2}]}),
        "the forward address is the mailbox null"
    );
    let before = app
        .get_ok("/api/v1/stats/emails?from=2020-01-01&to=2020-01-31")
        .await;
    assert_eq!(before, json!({"ingested": 0, "by_mailbox": []}));

    let anna = app.token_for(&line.anna).await;
    let (status, body) = get(&app, "/api/v1/stats/emails", &anna).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only: {body}");
    let (status, body) = get(
        &app,
        "/api/v1/stats/emails?from=2026-11-23&to=2026-11-01",
        &app.admin,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "to");
    app.stop().await;
}

/// A1: a person's tokens are listed and revoked by them or an admin; the list never holds
/// a token or its hash, and a revoked token is refused from its next use.
#[tokio::test]
async fn a1_tokens_are_listed_without_secrets_and_a_revoked_one_is_refused() {
    let app = TestApp::spawn().await;
    let line = app.sales_line().await;
    let first = app.token_for(&line.anna).await;
    let second = app.token_for(&line.anna).await;
    let ben = app.token_for(&line.ben).await;
    let path = format!("/api/v1/users/{}/tokens", line.anna);

    // Listing with the first token uses it: its use is recorded, the second's is not.
    let (status, list) = get(&app, &path, &first).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["next"], Value::Null);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    for item in items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(keys, ["created_at", "id", "last_used_at"], "{item}");
    }
    let text = list.to_string();
    assert!(
        !text.contains(&first) && !text.contains(&second),
        "no secrets: {text}"
    );
    assert!(items[0]["last_used_at"].is_string(), "{list}");
    assert_eq!(items[1]["last_used_at"], Value::Null, "{list}");
    let second_id = items[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get_ok(&path).await["items"],
        list["items"],
        "admins see them too"
    );

    // Someone else's tokens are not Ben's business.
    let (status, _) = get(&app, &path, &ben).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("{path}/{second_id}"),
            Some(&ben),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Anna revokes her second token with her first: it is refused from then on.
    let (status, me) = get(&app, "/api/v1/calls", &second).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let (status, body) = app
        .request(
            Method::DELETE,
            &format!("{path}/{second_id}"),
            Some(&first),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = get(&app, "/api/v1/calls", &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = get(&app, "/api/v1/calls", &first).await;
    assert_eq!(status, StatusCode::OK, "the other token still works");
    // Gone, or not hers: 404.
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("{path}/{second_id}"),
            Some(&first),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let bens = app
        .get_ok(&format!("/api/v1/users/{}/tokens", line.ben))
        .await;
    let bens_id = bens["items"][0]["id"].as_str().unwrap();
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("{path}/{bens_id}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "Ben's token is not Anna's");
    let (status, _) = get(&app, "/api/v1/calls", &ben).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get_ok(&path).await["items"].as_array().unwrap().len(),
        1
    );
    app.stop().await;
}

/// The registrations page: whose phone (id, name, extension), which device, how and from
/// where, since when and until when; a refresh keeps `since`.
#[tokio::test]
async fn registrations_show_the_person_the_device_and_since_when() {
    use crate::calls_sip::{Phone, Sipp};
    let app = TestApp::spawn_for_sipp().await;
    let anna = app
        .post_ok(
            "/api/v1/users",
            json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                   "extension": "101", "sip_password": "pw-101-secret"}),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = Phone::register(&app, "101", "pw-101-secret").await;

    let first = app.get_ok("/api/v1/registrations").await;
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{first}");
    let item = &items[0];
    assert_eq!(item["user"], json!(anna));
    assert_eq!(item["name"], "Anna");
    assert_eq!(item["extension"], "101");
    assert_eq!(item["trunk"], Value::Null);
    assert_eq!(item["user_agent"], "SIPp");
    assert_eq!(item["transport"], "udp");
    assert!(
        item["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", phone.port)),
        "{item}"
    );
    assert!(item["expires_in_s"].as_i64().unwrap() > 0, "{item}");
    let since = item["since"].as_str().unwrap().to_owned();
    assert!(since.ends_with('Z') && item["expires"].as_str().unwrap() > since.as_str());

    // The same phone refreshes its registration: still one binding, registered since then.
    let (ok, messages) = Sipp::start(
        "register.xml",
        phone.port,
        Some(app.sip_addr().to_string()),
        &["-s", "101", "-au", "101", "-ap", "pw-101-secret"],
    )
    .finish()
    .await;
    assert!(ok, "{messages}");
    let again = app.get_ok("/api/v1/registrations").await;
    assert_eq!(again["items"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again["items"][0]["since"], json!(since), "{again}");

    let token = app.token_for(&anna).await;
    let (status, _) = get(&app, "/api/v1/registrations", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only");
    app.stop().await;
}
