//! What access filtering costs on the lists agents read most: one page of
//! `/contacts`, of the call log `/calls` and of a contact's timeline, for an admin and
//! for agents at `own`, `queue` and `all`, with 100,000 contacts owned by 10 agents (five
//! queues of two) and 20,000 calls from them, SQLite. An agent at `own` sees a tenth of
//! the data: the lists are narrowed in SQL, so their pages cost about what an admin's do.
//!
//! Then the web console's list pages through the real router (tower `oneshot`, so the
//! figures are server time without a socket): the first page of 50 contacts and of 50
//! leads (as many leads as contacts, a third of them junk), without and with a search `?q=`
//! (a common name piece, a rare one, a run of phone digits, a text nobody has), for an
//! admin and for an agent at `own`.
//!
//! Run: `cargo bench --bench access_lists` (release). Environment:
//! `LEADLINE_BENCH_CONTACTS` (default 100000, also the number of leads),
//! `LEADLINE_BENCH_CALLS` (default 20000), `LEADLINE_BENCH_PAGES` (default 200 page
//! requests per list and viewer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use leadline::crm::model::{EntityKind, UserId};
use leadline::matcher::{Identifier, PhoneKey};
use leadline::store::{NewEntity, Store};
use leadline::{App, Config};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const AGENTS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn phone(i: usize) -> String {
    format!("+49151{i:08}")
}

async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = client.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let value: Value = resp.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {value}");
    value
}

fn pct(sorted: &[u128], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; test runners run bench binaries too and must get an
    // empty test list, not a benchmark.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let contacts = env_usize("LEADLINE_BENCH_CONTACTS", 100_000);
    let calls = env_usize("LEADLINE_BENCH_CALLS", 20_000);
    let pages = env_usize("LEADLINE_BENCH_PAGES", 200);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::for_data_dir(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let database_url = config.database_url.clone();
    let app = App::start(config).await.expect("start");
    let admin = app.generated_admin_token.clone().expect("admin token");
    let base = format!("http://{}/api/v1", app.http_addr);
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        request(
            &client,
            reqwest::Method::POST,
            format!("{base}{path}"),
            &admin,
            Some(body),
        )
    };

    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let user = post(
            "/users",
            json!({"name": format!("Agent {i}"), "email": format!("agent{i}@firma.test"),
                   "role": "agent"}),
        )
        .await;
        let id = user["id"].as_str().unwrap().to_owned();
        let token = post(&format!("/users/{id}/tokens"), json!({})).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        agents.push((id, token));
    }
    for pair in agents.chunks(2) {
        let members: Vec<&str> = pair.iter().map(|(id, _)| id.as_str()).collect();
        post(
            "/queues",
            json!({"name": format!("Queue {}", members[0]), "members": members}),
        )
        .await;
    }
    post(
        "/numbers",
        json!({"number": "+4930901820", "default_country": "DE", "queue": null}),
    )
    .await;

    // Contacts straight into the store (the same database), spread over the agents.
    let store = Store::connect(&database_url).await.expect("open the store");
    let started = Instant::now();
    for chunk in (0..contacts).collect::<Vec<_>>().chunks(20_000) {
        let batch: Vec<NewEntity> = chunk
            .iter()
            .map(|&i| NewEntity {
                kind: EntityKind::Contact,
                name: format!("Contact {i}"),
                identifiers: vec![Identifier::Phone(PhoneKey::E164(phone(i)))],
                responsible: Some(UserId(agents[i % AGENTS].0.clone())),
                source: "OTHER".to_owned(),
                company: None,
                customer: None,
                deal: None,
            })
            .collect();
        store.import_entities(&batch).await.expect("import");
    }
    println!(
        "loaded {contacts} contacts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Calls from known contacts, through the API (each an activity on its contact).
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for n in 0..calls {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            // From the first thousand contacts, so their timelines hold about 20 calls.
            let from = phone((n * 7919) % contacts.min(1_000));
            request(
                &client,
                reqwest::Method::POST,
                format!("{base}/calls/events"),
                &admin,
                Some(json!({"call_id": format!("bench-{n}"), "event": "ringing",
                            "direction": "incoming", "from": from, "to": "+4930901820"})),
            )
            .await;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "logged {calls} calls in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let agent_token = agents[0].1.clone();
    // A contact of agent 0, with calls on its timeline.
    let contact_of_agent0 = request(
        &client,
        reqwest::Method::GET,
        format!("{base}/contacts?phone=%2B49151{:08}", 0),
        &admin,
        None,
    )
    .await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    println!("| viewer | list | page p50 | page p99 | items per page |\n|---|---|---|---|---|");
    for (viewer, level) in [
        ("admin", "own"),
        ("agent at own", "own"),
        ("agent at queue", "queue"),
        ("agent at all", "all"),
    ] {
        request(
            &client,
            reqwest::Method::PUT,
            format!("{base}/settings/access"),
            &admin,
            Some(json!({"agent_view": level, "agent_edit": "own"})),
        )
        .await;
        let token = if viewer == "admin" {
            &admin
        } else {
            &agent_token
        };
        for list in [
            "/contacts?limit=100".to_owned(),
            "/calls?limit=100".to_owned(),
            format!("/activities?entity=contact:{contact_of_agent0}&limit=100"),
        ] {
            let mut latencies = Vec::with_capacity(pages);
            let mut items = 0;
            let mut cursor: Option<String> = None;
            for _ in 0..pages {
                // Walks the list and starts over at its end.
                let url = match &cursor {
                    Some(c) => format!("{base}{list}&cursor={c}"),
                    None => format!("{base}{list}"),
                };
                let t = Instant::now();
                let page = request(&client, reqwest::Method::GET, url, token, None).await;
                latencies.push(t.elapsed().as_micros());
                items += page["items"].as_array().map_or(0, Vec::len);
                cursor = page["next"].as_str().map(str::to_owned);
            }
            latencies.sort_unstable();
            let name = list.split('?').next().unwrap();
            println!(
                "| {viewer} | `{name}` | {:.2} ms | {:.2} ms | {:.0} |",
                pct(&latencies, 0.5),
                pct(&latencies, 0.99),
                items as f64 / pages as f64
            );
        }
    }
    console_pages(&app, &database_url, &admin, &agent_token, contacts, pages).await;
    app.shutdown().await.expect("shutdown");
}

/// The console's first list pages, timed inside the router.
async fn console_pages(
    app: &App,
    database_url: &str,
    admin: &str,
    agent_token: &str,
    contacts: usize,
    pages: usize,
) {
    use tower::ServiceExt as _;

    load_leads(database_url, contacts).await;
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let data_dir = tempfile::tempdir().expect("temp dir");
    let state = leadline::http::AppState {
        store: app.store.clone(),
        env_admin_token_hash: None,
        metrics: None,
        sip_realm: Arc::from("leadline"),
        profiles: Arc::new(leadline::sip::profiles::Profiles::builtin()),
        events: leadline::events::EventBus::default(),
        live: leadline::events::LiveCalls::default(),
        desk: leadline::sip::queueing::Desk::default(),
        node: leadline::cluster::NodeId::generate(),
        stopping,
        mail_changed: Arc::new(tokio::sync::Notify::new()),
        mail_credentials: leadline::mail::Credentials::new(app.store.clone()),
        mail_domain: Arc::from("leadline"),
        data_dir: Arc::from(data_dir.path()),
        access_changed: Arc::new(tokio::sync::watch::channel(0).0),
        webhook_private_targets: false,
        // The bench dials nobody and signs nobody in: no SIP side, no throttle state.
        dialer: None,
        login_throttle: Arc::default(),
        passwords: leadline::http::session::Passwords::default(),
    };
    let router = leadline::http::router(state);
    let get = |path: String, token: &str| {
        axum::http::Request::get(format!("/api/v1{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let set_level = |level: &str| {
        axum::http::Request::put("/api/v1/settings/access")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"agent_view": level, "agent_edit": "own"}).to_string(),
            ))
            .expect("request")
    };
    let answer = router
        .clone()
        .oneshot(set_level("own"))
        .await
        .expect("answer");
    assert!(answer.status().is_success(), "{}", answer.status());
    // Contact i is agent (i % 10)'s: agent 0 owns the tenth from the end.
    let rare = contacts.saturating_sub(10);
    let lists = [
        ("/contacts?limit=50".to_owned(), "no q"),
        (
            "/contacts?limit=50&q=contact%201".to_owned(),
            "q: common name piece",
        ),
        (
            format!("/contacts?limit=50&q=contact%20{rare}"),
            "q: one name",
        ),
        (
            format!("/contacts?limit=50&q={}", &phone(rare)[3..]),
            "q: phone digits",
        ),
        ("/contacts?limit=50&q=nobody".to_owned(), "q: no match"),
        ("/leads?limit=50".to_owned(), "no q"),
        ("/leads?limit=50&status=junk".to_owned(), "status=junk"),
        (
            "/leads?limit=50&q=lead%201".to_owned(),
            "q: common name piece",
        ),
        (format!("/leads?limit=50&q=lead%20{rare}"), "q: one name"),
        ("/leads?limit=50&q=nobody".to_owned(), "q: no match"),
    ];
    println!(
        "\nconsole list pages through the router ({contacts} contacts, {contacts} leads), \
         server time of the first page of 50\n\
         | viewer | page | p50 | p99 | items |\n|---|---|---|---|---|"
    );
    for (viewer, token) in [("admin", admin), ("agent at own", agent_token)] {
        for (path, what) in &lists {
            let mut latencies = Vec::with_capacity(pages);
            let mut items = 0;
            for _ in 0..pages {
                let t = Instant::now();
                let answer = router
                    .clone()
                    .oneshot(get(path.clone(), token))
                    .await
                    .expect("answer");
                let status = answer.status();
                let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
                    .await
                    .expect("body");
                latencies.push(t.elapsed().as_micros());
                assert!(status.is_success(), "{path}: {status}");
                let page: Value = serde_json::from_slice(&body).expect("json");
                items = page["items"].as_array().map_or(0, Vec::len);
            }
            latencies.sort_unstable();
            println!(
                "| {viewer} | `{}` ({what}) | {:.2} ms | {:.2} ms | {items} |",
                path.split('?').next().unwrap(),
                pct(&latencies, 0.5),
                pct(&latencies, 0.99),
            );
        }
    }
}

/// As many leads as contacts, straight into the database (the store imports only
/// contacts and companies): lead i is agent (i % 10)'s, every third one junk, each with
/// its own number.
async fn load_leads(database_url: &str, leads: usize) {
    use sqlx::Executor as _;

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url)
        .await
        .expect("database");
    let agents: Vec<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'agent' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("agents");
    let mut by_email: Vec<(String, String)> = Vec::new();
    for id in &agents {
        let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("email");
        by_email.push((email, id.clone()));
    }
    // In the order the contacts were given out: agent0@, agent1@ …
    by_email.sort();
    let started = Instant::now();
    let now = leadline::store::now_ms();
    for chunk in (0..leads).collect::<Vec<_>>().chunks(100) {
        let mut sql = String::from(
            "INSERT INTO leads (id, name, status, responsible, source, created_at, updated_at, \
             last_activity_at) VALUES ",
        );
        let mut identifiers = String::from(
            "INSERT INTO entity_identifiers (entity_kind, entity_id, kind, value, position) VALUES ",
        );
        for (n, &i) in chunk.iter().enumerate() {
            let id = uuid::Uuid::now_v7();
            let status = if i % 3 == 0 { "junk" } else { "new" };
            let owner = &by_email[i % by_email.len()].1;
            if n > 0 {
                sql.push_str(", ");
                identifiers.push_str(", ");
            }
            sql.push_str(&format!(
                "('{id}', 'Lead {i}', '{status}', '{owner}', 'CALL', {now}, {now}, {now})"
            ));
            identifiers.push_str(&format!("('lead', '{id}', 'phone', '+49160{i:08}', 0)"));
        }
        // Built from numbers and ids of our own only.
        pool.execute(sqlx::AssertSqlSafe(sql)).await.expect("leads");
        pool.execute(sqlx::AssertSqlSafe(identifiers))
            .await
            .expect("lead numbers");
    }
    println!(
        "loaded {leads} leads in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    pool.close().await;
}
