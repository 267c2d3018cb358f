//! Who may see and change what (A1–A3), over every endpoint that returns CRM
//! data, at every level.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::wait_until;
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

/// The fixture of the access tests: three agents in two queues (Anna and Ben share
/// "North", Ben and Carl share "South"), each responsible for a contact, a company, a
/// lead and a deal; one lead nobody is responsible for; a call and an e-mail per agent's
/// customer and a call from an unknown number.
struct Fixture {
    agents: BTreeMap<char, Agent>,
    /// Owner letter (`A`, `B`, `C`, or `N` for nobody) → `kind:id` of their entities.
    entities: BTreeMap<char, Vec<String>>,
    /// Call label (`A`, `B`, `C`, `U`) → call log id.
    calls: BTreeMap<char, String>,
    /// E-mail label (`A`, `B`, `C`) → e-mail id and its activity id.
    emails: BTreeMap<char, (String, String)>,
}

struct Agent {
    id: String,
    token: String,
}

fn phone_of(owner: char, kind: &str) -> String {
    let base = match kind {
        "contact" => 10,
        "company" => 20,
        _ => 30,
    };
    format!("+491701000{base}{}", owner as u32 - 'A' as u32)
}

fn email_of(owner: char) -> String {
    format!("customer-{}@kunde.test", owner.to_ascii_lowercase())
}

async fn fixture(app: &TestApp) -> Fixture {
    let mut agents = BTreeMap::new();
    for (letter, name, ext) in [
        ('A', "Anna", "101"),
        ('B', "Ben", "102"),
        ('C', "Carl", "103"),
    ] {
        let id = app
            .create_user(
                name,
                &format!("{}@firma.test", name.to_lowercase()),
                "agent",
                ext,
            )
            .await;
        let token = app.token_for(&id).await;
        agents.insert(letter, Agent { id, token });
    }
    for (name, members) in [("North", ['A', 'B']), ("South", ['B', 'C'])] {
        let members: Vec<&str> = members.iter().map(|m| agents[m].id.as_str()).collect();
        app.post_ok(
            "/api/v1/queues",
            json!({"name": name, "members": members}),
            StatusCode::CREATED,
        )
        .await;
    }
    // No queue on the number: a call rings only the customer's responsible (T5), so
    // whom a call concerns is plain.
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": "+4930901820", "default_country": "DE", "queue": null}),
        StatusCode::CREATED,
    )
    .await;
    let mut entities: BTreeMap<char, Vec<String>> = BTreeMap::new();
    for owner in ['A', 'B', 'C'] {
        let responsible = agents[&owner].id.clone();
        let mut create = async |kind: &str, path: &str, body: Value| {
            let mut body = body;
            body["responsible"] = json!(responsible);
            let id = app.post_ok(path, body, StatusCode::CREATED).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            entities
                .entry(owner)
                .or_default()
                .push(format!("{kind}:{id}"));
            id
        };
        let contact = create(
            "contact",
            "/api/v1/contacts",
            json!({"name": format!("Contact {owner}"), "phones": [phone_of(owner, "contact")],
                   "emails": [email_of(owner)]}),
        )
        .await;
        create(
            "company",
            "/api/v1/companies",
            json!({"name": format!("Company {owner}"), "phones": [phone_of(owner, "company")]}),
        )
        .await;
        create(
            "lead",
            "/api/v1/leads",
            json!({"name": format!("Lead {owner}"), "phones": [phone_of(owner, "lead")]}),
        )
        .await;
        create(
            "deal",
            "/api/v1/deals",
            json!({"name": format!("Deal {owner}"), "contact": contact}),
        )
        .await;
    }
    // The bootstrap admin has no user: a lead it creates without a responsible has none.
    let nobodys = app
        .post_ok(
            "/api/v1/leads",
            json!({"name": "Lead N", "phones": [phone_of('N', "lead")]}),
            StatusCode::CREATED,
        )
        .await;
    assert!(nobodys["responsible"].is_null(), "{nobodys}");
    entities.insert(
        'N',
        vec![format!("lead:{}", nobodys["id"].as_str().unwrap())],
    );

    let mut calls = BTreeMap::new();
    for (label, from) in [
        ('A', phone_of('A', "contact")),
        ('B', phone_of('B', "contact")),
        ('C', phone_of('C', "contact")),
        ('U', "+4915199999999".to_owned()),
    ] {
        let answer = app.ringing(&format!("call-{label}"), &from).await;
        calls.insert(label, answer["call"]["id"].as_str().unwrap().to_owned());
        if label == 'U' {
            // The unknown caller's new lead: no queue on the number, so nobody's.
            let created = answer["created"].as_array().unwrap();
            assert_eq!(created.len(), 1, "{answer}");
            let lead = created[0].as_str().unwrap().to_owned();
            let (_, id) = lead.split_once(':').unwrap();
            let record = app.get_ok(&format!("/api/v1/leads/{id}")).await;
            assert!(record["responsible"].is_null(), "{record}");
            entities.entry('N').or_default().push(lead);
        }
    }

    let address = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    for owner in ['A', 'B', 'C'] {
        // The employee's BCC to the forward address (E16): it goes to the recipient's
        // history.
        let employee = match owner {
            'A' => "anna@firma.test",
            'B' => "ben@firma.test",
            _ => "carl@firma.test",
        };
        let message = dir.path().join(format!("{owner}.eml"));
        std::fs::write(
            &message,
            format!(
                "From: <{employee}>\r\nTo: Customer {owner} <{}>\r\nSubject: Question {owner}\r\n\
                 Message-ID: <question-{owner}@firma.test>\r\n\r\nOur offer.\r\n",
                email_of(owner)
            ),
        )
        .unwrap();
        crate::mail::swaks(
            app,
            &[
                "--to",
                &address,
                "--from",
                employee,
                "--data",
                &format!("@{}", message.display()),
            ],
        )
        .await;
    }
    let emails: BTreeMap<char, (String, String)> = wait_until(
        Duration::from_secs(20),
        "three e-mails on the CRM",
        || async {
            let page = app.get_ok("/api/v1/emails").await;
            let Some(list) = page["items"].as_array() else {
                return Err(page.to_string());
            };
            let found: BTreeMap<char, (String, String)> = ['A', 'B', 'C']
                .into_iter()
                .filter_map(|owner| {
                    let email = list
                        .iter()
                        .find(|e| e["subject"] == format!("Question {owner}"))?;
                    Some((
                        owner,
                        (
                            email["id"].as_str()?.to_owned(),
                            email["activity"].as_str()?.to_owned(),
                        ),
                    ))
                })
                .collect();
            if found.len() == 3 {
                Ok(found)
            } else {
                Err(format!("{list:?}"))
            }
        },
    )
    .await;
    // A2's case: Anna's customer's mail also shown on Carl's contact (an admin's move).
    let deal_a = entities[&'A']
        .iter()
        .find(|e| e.starts_with("deal:"))
        .unwrap()
        .clone();
    let contact_c = entities[&'C']
        .iter()
        .find(|e| e.starts_with("contact:"))
        .unwrap()
        .clone();
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/activities/{}", emails[&'A'].1),
            Some(&app.admin),
            Some(json!({"entities": [deal_a, contact_c]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    Fixture {
        agents,
        entities,
        calls,
        emails,
    }
}

/// One row of the expected table: what `agent` sees and may change at a level.
struct Row {
    view: &'static str,
    edit: &'static str,
    agent: char,
    /// Owners whose entities the agent sees (lists and details).
    sees: &'static str,
    /// Owners whose entities the agent may change (PATCH 200; seen but not these: 403).
    edits: &'static str,
    /// Calls in the agent's call log (`U`: the unknown caller).
    calls: &'static str,
    /// E-mails the agent reads (list, detail, raw download). `A` is on Anna's deal and
    /// Carl's contact.
    emails: &'static str,
    /// What `/match` shows for Ben's customer's number (status is `known` for all).
    match_ben: &'static str,
}

const TABLE: &[Row] = &[
    // own: each their own; the mail on Anna's deal and Carl's contact is nobody's (A2).
    row("own", "own", 'A', "A", "A", "A", "", ""),
    row("own", "own", 'B', "B", "B", "B", "B", "B"),
    row("own", "own", 'C', "C", "C", "C", "C", ""),
    // queue: Anna and Carl reach Ben's; Ben reaches all three queues' members.
    row("queue", "own", 'A', "AB", "A", "AB", "B", "B"),
    row("queue", "queue", 'A', "AB", "AB", "AB", "B", "B"),
    row("queue", "queue", 'B', "ABC", "ABC", "ABC", "ABC", "B"),
    row("queue", "queue", 'C', "BC", "BC", "BC", "BC", "B"),
    // all: unassigned entities and the unknown caller's call too.
    row("all", "own", 'A', "ABCN", "A", "ABCU", "ABC", "B"),
    row("all", "queue", 'C', "ABCN", "BC", "ABCU", "ABC", "B"),
    row("all", "all", 'B', "ABCN", "ABCN", "ABCU", "ABC", "B"),
];

#[allow(clippy::too_many_arguments)]
const fn row(
    view: &'static str,
    edit: &'static str,
    agent: char,
    sees: &'static str,
    edits: &'static str,
    calls: &'static str,
    emails: &'static str,
    match_ben: &'static str,
) -> Row {
    Row {
        view,
        edit,
        agent,
        sees,
        edits,
        calls,
        emails,
        match_ben,
    }
}

/// GET every page of a list with this token (limit 2, so paging is exercised).
async fn all_pages(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=2&cursor={c}"),
            None => format!("{path}{sep}limit=2"),
        };
        let (status, page) = app.request(Method::GET, &url, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "GET {url}: {page}");
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= 2, "a page never exceeds its limit");
        items.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn letters(s: &str) -> BTreeSet<char> {
    s.chars().collect()
}

/// A1–A3: for every endpoint that returns CRM data and every level, what each
/// agent sees and may change, against the table above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_a2_a3_every_endpoint_follows_the_table_at_every_level() {
    let app = TestApp::spawn().await;
    every_endpoint_follows_the_table(&app).await;
    app.stop().await;
}

/// The same on PostgreSQL: the list queries filter in SQL, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_a2_a3_the_table_holds_on_postgresql() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("access_table").await;
    let app = TestApp::spawn_with(|config, _| config.database_url = url).await;
    every_endpoint_follows_the_table(&app).await;
    app.stop().await;
}

async fn every_endpoint_follows_the_table(app: &TestApp) {
    let f = fixture(app).await;
    let owner_of = |entity: &str| -> char {
        *f.entities
            .iter()
            .find(|(_, list)| list.iter().any(|e| e == entity))
            .unwrap()
            .0
    };
    for row in TABLE {
        let at = format!("view {} edit {} agent {}", row.view, row.edit, row.agent);
        app.put_ok(
            "/api/v1/settings/access",
            json!({"agent_view": row.view, "agent_edit": row.edit}),
        )
        .await;
        let token = &f.agents[&row.agent].token;

        // Lists: exactly the entities of the owners in `sees`, every page.
        let mut listed = BTreeSet::new();
        for kind in ["contacts", "companies", "leads", "deals"] {
            for item in all_pages(app, token, &format!("/api/v1/{kind}")).await {
                let entity = format!(
                    "{}:{}",
                    &kind[..kind.len() - 1].replace("companie", "company"),
                    item["id"].as_str().unwrap()
                );
                listed.insert(owner_of(&entity));
            }
        }
        assert_eq!(listed, letters(row.sees), "lists, {at}");

        // Details and changes of every entity.
        for (owner, list) in &f.entities {
            for entity in list {
                let (kind, id) = entity.split_once(':').unwrap();
                let path = match kind {
                    "company" => format!("/api/v1/companies/{id}"),
                    kind => format!("/api/v1/{kind}s/{id}"),
                };
                let (status, body) = app.request(Method::GET, &path, Some(token), None).await;
                let expected = if row.sees.contains(*owner) {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                assert_eq!(status, expected, "GET {entity} ({owner}'s), {at}: {body}");
                if status == StatusCode::NOT_FOUND {
                    assert_eq!(body["error"]["code"], "not_found", "{body}");
                }
                let (status, body) = app
                    .request(
                        Method::PATCH,
                        &path,
                        Some(token),
                        Some(json!({"name": format!("{kind} of {owner}")})),
                    )
                    .await;
                let expected = if row.edits.contains(*owner) {
                    StatusCode::OK
                } else if row.sees.contains(*owner) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::NOT_FOUND
                };
                assert_eq!(status, expected, "PATCH {entity} ({owner}'s), {at}: {body}");
                if status != StatusCode::OK {
                    assert!(body["error"]["message"].is_string(), "a JSON error: {body}");
                }
            }
        }

        // The call log and single calls.
        let listed: BTreeSet<char> = all_pages(app, token, "/api/v1/calls")
            .await
            .iter()
            .map(|c| {
                *f.calls
                    .iter()
                    .find(|(_, id)| c["id"] == **id)
                    .expect("a call of the fixture")
                    .0
            })
            .collect();
        assert_eq!(listed, letters(row.calls), "call log, {at}");
        for (label, id) in &f.calls {
            let (status, _) = app
                .request(
                    Method::GET,
                    &format!("/api/v1/calls/{id}"),
                    Some(token),
                    None,
                )
                .await;
            let expected = if row.calls.contains(*label) {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(status, expected, "GET call {label}, {at}");
        }

        // E-mails: list, detail and the raw message.
        let listed: BTreeSet<char> = all_pages(app, token, "/api/v1/emails")
            .await
            .iter()
            .map(|e| {
                *f.emails
                    .iter()
                    .find(|(_, (id, _))| e["id"] == **id)
                    .expect("an e-mail of the fixture")
                    .0
            })
            .collect();
        assert_eq!(listed, letters(row.emails), "e-mails, {at}");
        for (label, (id, _)) in &f.emails {
            let expected = if row.emails.contains(*label) {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            for path in [
                format!("/api/v1/emails/{id}"),
                format!("/api/v1/emails/{id}/raw"),
            ] {
                let (status, _) = app.request(Method::GET, &path, Some(token), None).await;
                assert_eq!(status, expected, "GET {path} (e-mail {label}), {at}");
            }
        }

        // A2 in a timeline: Anna's deal shows the e-mail only to who also sees Carl's
        // contact.
        let deal_a = f.entities[&'A']
            .iter()
            .find(|e| e.starts_with("deal:"))
            .unwrap();
        let (status, timeline) = app
            .request(
                Method::GET,
                &format!("/api/v1/activities?entity={deal_a}"),
                Some(token),
                None,
            )
            .await;
        if row.sees.contains('A') {
            assert_eq!(status, StatusCode::OK, "{timeline}");
            let shows_mail = timeline["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["id"] == f.emails[&'A'].1.as_str());
            assert_eq!(
                shows_mail,
                row.emails.contains('A'),
                "deal A's timeline, {at}: {timeline}"
            );
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND, "deal A's timeline, {at}");
        }

        // /match: "known" for everyone, the entity only for who may see it.
        let (status, matched) = app
            .request(
                Method::GET,
                &format!(
                    "/api/v1/match?phone={}",
                    phone_of('B', "contact").replace('+', "%2B")
                ),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{matched}");
        assert_eq!(matched["status"], "known", "{at}: {matched}");
        let shown = matched["matches"].as_array().unwrap().len();
        assert_eq!(shown, row.match_ben.len(), "/match, {at}: {matched}");
        if row.match_ben.is_empty() {
            let reason = matched["reason"].as_str().unwrap();
            assert!(
                !reason.contains("contact:"),
                "the reason names nothing hidden: {reason}"
            );
        }
    }
}

/// A3: moving a call or an e-mail needs edit rights on every entity it leaves and joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_moving_an_activity_needs_edit_rights_on_both_sides() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    app.put_ok(
        "/api/v1/settings/access",
        json!({"agent_view": "all", "agent_edit": "own"}),
    )
    .await;
    let anna = &f.agents[&'A'].token;
    let entity = |owner: char, kind: &str| {
        f.entities[&owner]
            .iter()
            .find(|e| e.starts_with(kind))
            .unwrap()
            .clone()
    };
    let activity_of_call = async |label: char| {
        let call = app
            .get_ok(&format!("/api/v1/calls/{}", f.calls[&label]))
            .await;
        call["activity"].as_str().unwrap().to_owned()
    };
    // Ben's customer's e-mail onto Anna's deal: Anna may not change Ben's contact.
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/activities/{}", f.emails[&'B'].1),
            Some(anna),
            Some(json!({"entities": [entity('A', "deal:")]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Her own customer's call onto Ben's deal: she may not change Ben's deal.
    let call_a = activity_of_call('A').await;
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/activities/{call_a}"),
            Some(anna),
            Some(json!({"entities": [entity('B', "deal:")]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Her own call onto her own deal: allowed, and the timeline follows.
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/api/v1/activities/{call_a}"),
            Some(anna),
            Some(json!({"entities": [entity('A', "deal:")], "completed": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity={}",
            entity('A', "deal:")
        ))
        .await;
    let moved = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == call_a.as_str())
        .expect("the call is on the deal now")
        .clone();
    assert_eq!(moved["entities"], json!([entity('A', "deal:")]), "{moved}");
    assert_eq!(moved["completed"], true);
    // A target that does not exist, and one she may not see, answer alike.
    app.put_ok(
        "/api/v1/settings/access",
        json!({"agent_view": "own", "agent_edit": "own"}),
    )
    .await;
    let mut answers = Vec::new();
    for target in ["deal:no-such-deal".to_owned(), entity('B', "deal:")] {
        let (status, body) = app
            .request(
                Method::PATCH,
                &format!("/api/v1/activities/{call_a}"),
                Some(anna),
                Some(json!({"entities": [target]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        answers.push(body["error"]["code"].clone());
    }
    assert_eq!(answers[0], answers[1]);
    app.stop().await;
}

/// A1 in an open call window: narrowing the level takes effect without reconnecting. At
/// `all` Ben's window shows a call ringing Anna for her customer; once the admin sets
/// `own`, the next such call is not shown, while his own customer's call that follows is
/// (events arrive in order, so nothing of the earlier call can come later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_narrowing_the_level_applies_to_open_call_windows() {
    use crate::calls_sip::CallWindow;
    let app = TestApp::spawn().await;
    let anna = app
        .create_user("Anna", "anna@firma.test", "agent", "101")
        .await;
    let ben = app
        .create_user("Ben", "ben@firma.test", "agent", "102")
        .await;
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": "+4930901820", "default_country": "DE", "queue": null}),
        StatusCode::CREATED,
    )
    .await;
    for (phone, responsible) in [("+4917000000001", &anna), ("+4917000000002", &ben)] {
        app.post_ok(
            "/api/v1/contacts",
            json!({"name": format!("Customer of {responsible}"), "phones": [phone],
                   "responsible": responsible}),
            StatusCode::CREATED,
        )
        .await;
    }
    app.put_ok("/api/v1/settings/access", json!({"agent_view": "all"}))
        .await;
    let mut window = CallWindow::open(&app, &app.token_for(&ben).await).await;

    app.ringing("call-1", "+4917000000001").await;
    let seen = window
        .read_until("\"call_id\":\"call-1\"", Duration::from_secs(10))
        .await;
    assert!(seen.contains("\"call_id\":\"call-1\""), "at all: {seen}");

    app.put_ok(
        "/api/v1/settings/access",
        json!({"agent_view": "own", "agent_edit": "own"}),
    )
    .await;
    app.ringing("call-2", "+4917000000001").await;
    app.ringing("call-3", "+4917000000002").await;
    let seen = window
        .read_until("\"call_id\":\"call-3\"", Duration::from_secs(10))
        .await;
    assert!(seen.contains("\"call_id\":\"call-3\""), "his own: {seen}");
    assert!(
        !seen.contains("\"call_id\":\"call-2\""),
        "at own, Anna's customer's call is not Ben's to see: {seen}"
    );
    app.stop().await;
}

/// A deleted employee's open call window closes at the next event rather than streaming
/// on with the rights it opened with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_a_deleted_employees_call_window_closes() {
    use crate::calls_sip::CallWindow;
    let app = TestApp::spawn().await;
    let ben = app
        .create_user("Ben", "ben@firma.test", "agent", "102")
        .await;
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": "+4930901820", "default_country": "DE", "queue": null}),
        StatusCode::CREATED,
    )
    .await;
    let mut window = CallWindow::open(&app, &app.token_for(&ben).await).await;
    let (status, body) = app
        .request(
            Method::DELETE,
            &format!("/api/v1/users/{ben}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    app.ringing("call-after", "+4917000000009").await;
    assert!(
        window.ends_within(Duration::from_secs(10)).await,
        "the window of a deleted employee closes"
    );
    app.stop().await;
}
