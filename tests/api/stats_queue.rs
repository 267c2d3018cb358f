//! Queue statistics: every figure of `GET /stats/calls` (offered, answered, missed,
//! abandoned, wait, service level, talk) over a scripted day of calls with hand-computed
//! answers, on SQLite and PostgreSQL, for an admin (summed in SQL) and for an agent
//! (summed over the calls of their call log): the two ways of counting must agree.

use leadline::crm::model::QueueId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::postgres::PgServer;
use crate::helpers::TestApp;

const SALES: &str = "+4930901820";
const SUPPORT: &str = "+4930901821";
const DAY: &str = "from=2026-11-23&to=2026-11-23";

#[derive(Clone, Copy)]
enum Who {
    Anna,
    Ben,
}

#[derive(Clone, Copy)]
enum Queue {
    Sales,
    Support,
    /// A queue no number hands calls to: only a call's own record can name it.
    Overflow,
}

/// One scripted incoming call: times are 2026-11-23 UTC.
struct Script {
    id: &'static str,
    from: &'static str,
    to: &'static str,
    ring: &'static str,
    answer: Option<(Who, &'static str)>,
    end: Option<(&'static str, &'static str)>,
    /// The queue and wait the queue desk records; `None`: a call from before queueing.
    queue: Option<(Queue, Option<i64>)>,
}

/// The day. Responsibles follow the sales queue's rotation (T9: Anna, Ben, Anna, …, one
/// new lead per call); the support queue has only Ben.
///
/// | call | hour | queue    | wait ms | answered (after)  | ended    | outcome   | talk ms |
/// |------|------|----------|---------|-------------------|----------|-----------|---------|
/// | s1   | 09   | sales    | 10 500  | Anna (12 s)       | 09:02:12 | answered  | 120 000 |
/// | s2   | 09   | sales    | 28 250  | Ben (30 s)        | 09:11:00.250 | answered | 30 250 |
/// | s3   | 09   | sales    | 65 000  | —                 | 09:21:05 | abandoned | —       |
/// | s4   | 09   | (number) | NULL    | —                 | 09:30:20 | missed    | —       |
/// | s5   | 14   | sales    | 19 999  | Anna (20 s)       | —        | (talking) | —       |
/// | s6   | 14   | sales    | NULL    | —                 | —        | (waiting) | —       |
/// | h1   | 10   | support  | 1 000   | Ben (5 s)         | 10:05:05.500 | answered | 300 500 |
/// | h2   | 10   | overflow | 60 000  | —                 | 10:31:00 | abandoned | —       |
///
/// Responsible: s1 Anna, s2 Ben, s3 Anna, s4 Ben, s5 Anna, s6 Ben, h1 and h2 Ben.
const CALLS: [Script; 8] = [
    Script {
        id: "s1",
        from: "030 1111111",
        to: SALES,
        ring: "09:00:00",
        answer: Some((Who::Anna, "09:00:12")),
        end: Some(("09:02:12", "answered")),
        queue: Some((Queue::Sales, Some(10_500))),
    },
    Script {
        id: "s2",
        from: "030 2222222",
        to: SALES,
        ring: "09:10:00",
        answer: Some((Who::Ben, "09:10:30")),
        end: Some(("09:11:00.250", "answered")),
        queue: Some((Queue::Sales, Some(28_250))),
    },
    Script {
        id: "s3",
        from: "030 3333333",
        to: SALES,
        ring: "09:20:00",
        answer: None,
        end: Some(("09:21:05", "abandoned")),
        queue: Some((Queue::Sales, Some(65_000))),
    },
    Script {
        id: "s4",
        from: "030 4444444",
        to: SALES,
        ring: "09:30:00",
        answer: None,
        end: Some(("09:30:20", "missed")),
        queue: None,
    },
    Script {
        id: "s5",
        from: "030 5555555",
        to: SALES,
        ring: "14:00:00",
        answer: Some((Who::Anna, "14:00:20")),
        end: None,
        queue: Some((Queue::Sales, Some(19_999))),
    },
    Script {
        id: "s6",
        from: "030 6666666",
        to: SALES,
        ring: "14:30:00",
        answer: None,
        end: None,
        queue: Some((Queue::Sales, None)),
    },
    Script {
        id: "h1",
        from: "030 7777777",
        to: SUPPORT,
        ring: "10:00:00",
        answer: Some((Who::Ben, "10:00:05")),
        end: Some(("10:05:05.500", "answered")),
        queue: Some((Queue::Support, Some(1_000))),
    },
    Script {
        id: "h2",
        from: "030 8888888",
        to: SUPPORT,
        ring: "10:30:00",
        answer: None,
        end: Some(("10:31:00", "abandoned")),
        queue: Some((Queue::Overflow, Some(60_000))),
    },
];

struct Day {
    anna: String,
    ben: String,
    sales: String,
    support: String,
    overflow: String,
}

impl Day {
    fn user(&self, who: Who) -> &str {
        match who {
            Who::Anna => &self.anna,
            Who::Ben => &self.ben,
        }
    }

    fn queue(&self, queue: Queue) -> &str {
        match queue {
            Queue::Sales => &self.sales,
            Queue::Support => &self.support,
            Queue::Overflow => &self.overflow,
        }
    }
}

async fn new_queue(app: &TestApp, name: &str, members: &[&str]) -> String {
    app.post_ok(
        "/api/v1/queues",
        json!({"name": name, "members": members}),
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The lines, the calls of [`CALLS`] pushed as a PBX does with their queue and wait
/// recorded as the queue desk does, and two calls that do not count (the day before, and
/// an outgoing one).
async fn the_day(app: &TestApp) -> Day {
    let line = app.sales_line().await;
    let sales = app
        .get_ok(&format!("/api/v1/numbers/{}", line.number))
        .await["queue"]
        .as_str()
        .unwrap()
        .to_owned();
    let support = new_queue(app, "Support", &[&line.ben]).await;
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": SUPPORT, "default_country": "DE", "queue": support}),
        StatusCode::CREATED,
    )
    .await;
    let overflow = new_queue(app, "Overflow", &[&line.ben]).await;
    let day = Day {
        anna: line.anna,
        ben: line.ben,
        sales,
        support,
        overflow,
    };
    let store = &app.app.as_ref().expect("running").store;
    for call in &CALLS {
        let event = |event: &str, at: &str| {
            json!({"call_id": call.id, "event": event, "direction": "incoming",
                   "from": call.from, "to": call.to, "at": format!("2026-11-23T{at}Z")})
        };
        app.post_ok(
            "/api/v1/calls/events",
            event("ringing", call.ring),
            StatusCode::OK,
        )
        .await;
        if let Some((who, at)) = call.answer {
            let mut body = event("answered", at);
            body["user"] = json!(day.user(who));
            app.post_ok("/api/v1/calls/events", body, StatusCode::OK)
                .await;
        }
        if let Some((at, outcome)) = call.end {
            let mut body = event("ended", at);
            body["outcome"] = json!(outcome);
            app.post_ok("/api/v1/calls/events", body, StatusCode::OK)
                .await;
        }
        if let Some((queue, wait_ms)) = call.queue {
            store
                .set_call_queue(call.id, &QueueId(day.queue(queue).to_owned()), wait_ms)
                .await
                .expect("the call's queue is recorded");
        }
    }
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": "old", "event": "ringing", "direction": "incoming",
               "from": "030 9999999", "to": SALES, "at": "2026-11-22T09:00:00Z"}),
        StatusCode::OK,
    )
    .await;
    store
        .set_call_queue("old", &QueueId(day.sales.clone()), Some(500_000))
        .await
        .expect("the call's queue is recorded");
    app.post_ok(
        "/api/v1/calls/events",
        json!({"call_id": "out", "event": "ringing", "direction": "outgoing",
               "from": SALES, "to": "030 1111111", "user": day.anna,
               "at": "2026-11-23T09:05:00Z"}),
        StatusCode::OK,
    )
    .await;
    day
}

/// One item as the API must answer it.
fn item(
    key: &str,
    [offered, answered, missed, abandoned]: [u64; 4],
    avg_wait_s: f64,
    max_wait_s: f64,
    service_level: Option<f64>,
    avg_talk_s: Option<f64>,
) -> Value {
    json!({"key": key, "offered": offered, "answered": answered, "missed": missed,
           "abandoned": abandoned, "avg_wait_s": avg_wait_s, "max_wait_s": max_wait_s,
           "service_level": service_level, "avg_talk_s": avg_talk_s})
}

/// An hour without calls.
fn quiet(hour: usize) -> Value {
    item(&format!("{hour:02}"), [0; 4], 0.0, 0.0, None, None)
}

/// Most offered first, then by key: the API's order, for keys (ids) the test cannot fix.
fn busiest_first(mut items: Vec<Value>) -> Vec<Value> {
    items.sort_by(|a, b| {
        b["offered"]
            .as_u64()
            .cmp(&a["offered"].as_u64())
            .then_with(|| a["key"].as_str().cmp(&b["key"].as_str()))
    });
    items
}

async fn stats(app: &TestApp, by: &str, token: &str) -> Vec<Value> {
    let (status, body) = app
        .request(
            Method::GET,
            &format!("/api/v1/stats/calls?{DAY}&by={by}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "by={by}: {body}");
    body["items"].as_array().expect("items").clone()
}

fn hours(mut busy: Vec<Value>) -> Vec<Value> {
    (0..24)
        .map(|h| {
            let key = format!("{h:02}");
            match busy.iter().position(|i| i["key"] == key) {
                Some(at) => busy.remove(at),
                None => quiet(h),
            }
        })
        .collect()
}

#[tokio::test]
async fn a1_a2_queue_figures_are_exact_for_an_admin_and_for_an_agent_over_their_calls() {
    let app = TestApp::spawn().await;
    figures_are_exact(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a1_a2_queue_figures_are_exact_for_an_admin_and_for_an_agent_over_their_calls_on_postgresql()
 {
    let url = PgServer::shared()
        .create_database("stats_queue_figures_are_exact")
        .await;
    let app = TestApp::spawn_with_database(&url).await;
    figures_are_exact(&app).await;
    app.stop().await;
}

async fn figures_are_exact(app: &TestApp) {
    let day = the_day(app).await;
    let admin = app.admin.clone();
    let (anna, ben) = (day.anna.as_str(), day.ben.as_str());

    // The call log holds the queue, the wait and the responsibles the table assumes.
    let log = app.get_ok("/api/v1/calls?limit=500").await;
    let logged = |id: &str| {
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["call_id"] == id)
            .unwrap_or_else(|| panic!("{id} is logged: {log}"))
            .clone()
    };
    for (id, responsible) in [
        ("s1", anna),
        ("s2", ben),
        ("s3", anna),
        ("s4", ben),
        ("s5", anna),
        ("s6", ben),
        ("h2", ben),
    ] {
        assert_eq!(logged(id)["responsible"], json!(responsible), "{id}");
    }
    assert_eq!(logged("s3")["outcome"], "abandoned");
    assert_eq!(logged("s5")["outcome"], Value::Null, "still talking");

    // Sales: six calls; s4 records no queue and counts for its number's.
    // Waits 10 500 + 28 250 + 65 000 + 0 + 19 999 + 0 = 123 749 ms over 6 = 20.625 s;
    // within 20 s: s1 (12 s) and s5 (20 s exactly); talk (120 000 + 30 250) / 2.
    let sales = |key: &str| {
        item(
            key,
            [6, 3, 1, 1],
            20.625,
            65.0,
            Some(2.0 / 6.0),
            Some(75.125),
        )
    };
    // Support: h1 alone (its own queue); h2 recorded the overflow queue.
    let support = item(&day.support, [1, 1, 0, 0], 1.0, 1.0, Some(1.0), Some(300.5));
    let overflow = item(&day.overflow, [1, 0, 0, 1], 60.0, 60.0, Some(0.0), None);
    assert_eq!(
        stats(app, "queue", &admin).await,
        busiest_first(vec![sales(&day.sales), support.clone(), overflow])
    );

    // Numbers: support's waits (1 000 + 60 000) / 2, one of two within 20 s.
    assert_eq!(
        stats(app, "number", &admin).await,
        [
            sales(SALES),
            item(SUPPORT, [2, 1, 0, 1], 30.5, 60.0, Some(0.5), Some(300.5)),
        ]
    );

    // Agents: Anna s1, s3, s5: waits 95 499 / 3 = 31 833 ms; two of three within 20 s.
    // Ben s2, s4, s6, h1, h2: waits 89 250 / 5; h1 alone within 20 s; talk
    // (30 250 + 300 500) / 2.
    let anna_all = item(
        anna,
        [3, 2, 0, 1],
        31.833,
        65.0,
        Some(2.0 / 3.0),
        Some(120.0),
    );
    assert_eq!(
        stats(app, "agent", &admin).await,
        [
            item(ben, [5, 2, 1, 1], 17.85, 60.0, Some(0.2), Some(165.375)),
            anna_all.clone(),
        ]
    );

    // Hours: 09 has 103 750 ms of waits over 4 calls = 25 937.5 ms, rounded half up to
    // 25.938 s; 14 has 19 999 / 2 = 9 999.5 ms, 10 s, and only a call still talking.
    let nine = item("09", [4, 2, 1, 1], 25.938, 65.0, Some(0.25), Some(75.125));
    let fourteen = item("14", [2, 1, 0, 0], 10.0, 19.999, Some(0.5), None);
    let admin_hours = stats(app, "hour", &admin).await;
    assert_eq!(
        admin_hours,
        hours(vec![
            nine.clone(),
            item("10", [2, 1, 0, 1], 30.5, 60.0, Some(0.5), Some(300.5)),
            fourteen.clone(),
        ])
    );

    // Anna at `own` sees the sales calls (her queue rings her) and no support call:
    // her figures are summed over her call log, by the same rules.
    let token = app.token_for(anna).await;
    assert_eq!(
        app.get_ok("/api/v1/settings/access").await["agent_view"],
        "own"
    );
    assert_eq!(stats(app, "queue", &token).await, [sales(&day.sales)]);
    assert_eq!(stats(app, "number", &token).await, [sales(SALES)]);
    // Ben's sales calls s2, s4, s6: waits 28 250 / 3 = 9 416.67 ms; none within 20 s.
    assert_eq!(
        stats(app, "agent", &token).await,
        busiest_first(vec![
            anna_all,
            item(ben, [3, 1, 1, 0], 9.417, 28.25, Some(0.0), Some(30.25)),
        ])
    );
    assert_eq!(
        stats(app, "hour", &token).await,
        hours(vec![nine, fourteen])
    );

    // At `all` she is counted in SQL, as an admin is.
    app.put_ok("/api/v1/settings/access", json!({"agent_view": "all"}))
        .await;
    assert_eq!(stats(app, "hour", &token).await, admin_hours);
}
