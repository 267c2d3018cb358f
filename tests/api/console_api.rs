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

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The names in a list, sorted.
fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// `GET` with a token; the status, the headers and the body's bytes.
async fn fetch(
    app: &TestApp,
    path: &str,
    token: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let answer = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    let status = answer.status();
    let headers = answer.headers().clone();
    (
        status,
        headers,
        answer.bytes().await.expect("body").to_vec(),
    )
}

/// The error's code and field of a refused request.
fn refused(status: StatusCode, body: &Value) -> (StatusCode, String, String) {
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
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

/// `?q=` finds a piece of a name in any letter case, a piece of an e-mail address, a
/// number in any spelling or a run of its digits, with wildcards taken literally; an
/// agent at `own` finds no colleague's customer (A1). Lead and deal filters narrow the
/// lists, and paging walks a filtered list to its end.
async fn a1_search_finds_names_addresses_and_numbers_of_what_the_agent_sees(app: &TestApp) {
    let team = team(app).await;
    let clara_a = entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Clara Müller", "phones": ["+4917612345678"],
               "emails": ["clara@kunde.test"], "responsible": team.anna.id}),
    )
    .await;
    let clara_b = entity(
        app,
        "/api/v1/contacts",
        json!({"name": "CLARA Schmidt", "phones": ["+4917699998888"],
               "emails": ["c.schmidt@kunde.test"], "responsible": team.ben.id}),
    )
    .await;
    entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Dieter Wolf 100%", "phones": ["+494012345600"],
               "emails": ["dieter@wolf.test"], "responsible": team.anna.id}),
    )
    .await;
    entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Özlem Demir", "responsible": team.anna.id}),
    )
    .await;
    let admin = app.admin.clone();
    let find = async |path: &str, token: &str| names(&get_as(app, path, token).await);
    // A capital outside ASCII is found as typed on both databases.
    for q in ["%C3%96zlem", "zlem%20DEMIR"] {
        assert_eq!(
            find(&format!("/api/v1/contacts?q={q}"), &team.anna.token).await,
            ["Özlem Demir"],
            "q={q}"
        );
    }

    assert_eq!(
        find("/api/v1/contacts?q=clara", &admin).await,
        ["CLARA Schmidt", "Clara Müller"]
    );
    assert_eq!(
        find("/api/v1/contacts?q=cLaRa", &team.anna.token).await,
        ["Clara Müller"],
        "A1: only Anna's own customer"
    );
    assert_eq!(
        find("/api/v1/contacts?q=%C3%BCller", &team.anna.token).await,
        ["Clara Müller"]
    );
    assert_eq!(
        find("/api/v1/contacts?q=KUNDE.test", &admin).await,
        ["CLARA Schmidt", "Clara Müller"]
    );
    // A national spelling is read like ?phone=; a run of digits is found inside.
    for q in ["0176%201234%205678", "12345678", "%2B49%20(176)%2012345678"] {
        assert_eq!(
            find(&format!("/api/v1/contacts?q={q}"), &team.anna.token).await,
            ["Clara Müller"],
            "q={q}"
        );
        assert_eq!(
            find(&format!("/api/v1/contacts?q={q}"), &team.ben.token).await,
            Vec::<String>::new(),
            "A1: Ben finds no colleague's customer by q={q}"
        );
    }
    assert_eq!(
        find("/api/v1/contacts?q=99998888", &team.ben.token).await,
        ["CLARA Schmidt"]
    );
    // Wildcards are text.
    assert_eq!(
        find("/api/v1/contacts?q=100%25", &admin).await,
        ["Dieter Wolf 100%"]
    );
    assert_eq!(
        find("/api/v1/contacts?q=_", &admin).await,
        Vec::<String>::new()
    );
    let (status, body) = call(
        app,
        Method::GET,
        &format!("/api/v1/contacts?q={}", "x".repeat(201)),
        &admin,
    )
    .await;
    assert_eq!(
        refused(status, &body),
        (StatusCode::BAD_REQUEST, "invalid_query".into(), "q".into())
    );

    // Paging walks a filtered list: one per page, then the end.
    let first = get_as(app, "/api/v1/contacts?q=clara&limit=1", &admin).await;
    let cursor = first["next"].as_str().expect("a second page").to_owned();
    let second = get_as(
        app,
        &format!("/api/v1/contacts?q=clara&limit=1&cursor={cursor}"),
        &admin,
    )
    .await;
    let mut walked = ids(&first);
    walked.extend(ids(&second));
    walked.sort();
    let mut both = vec![clara_a.as_str(), clara_b.as_str()];
    both.sort();
    assert_eq!(walked, both);
    assert!(second["next"].is_null(), "{second}");

    // Leads by status.
    let junk = entity(
        app,
        "/api/v1/leads",
        json!({"name": "Spam Caller", "phones": ["+4915100000001"], "responsible": team.anna.id}),
    )
    .await;
    entity(
        app,
        "/api/v1/leads",
        json!({"name": "New Lead", "phones": ["+4915100000002"], "responsible": team.anna.id}),
    )
    .await;
    let (status, body) = patch_as(
        app,
        &format!("/api/v1/leads/{junk}"),
        &admin,
        json!({"status": "junk"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        find("/api/v1/leads?status=junk", &team.anna.token).await,
        ["Spam Caller"]
    );
    assert_eq!(
        find("/api/v1/leads?status=new&q=lead", &team.anna.token).await,
        ["New Lead"]
    );
    for (path, field) in [
        ("/api/v1/leads?status=open", "status"),
        ("/api/v1/contacts?status=new", "status"),
        ("/api/v1/leads?pipeline=default", "pipeline"),
        ("/api/v1/companies?company=x", "company"),
    ] {
        let (status, body) = call(app, Method::GET, path, &admin).await;
        assert_eq!(
            refused(status, &body),
            (
                StatusCode::BAD_REQUEST,
                "invalid_query".into(),
                field.into()
            ),
            "{path}: {body}"
        );
    }

    // Deals by status, pipeline, stage, contact and company, and by their customer.
    let company = entity(
        app,
        "/api/v1/companies",
        json!({"name": "Müller Bau", "responsible": team.anna.id}),
    )
    .await;
    let (status, body) = patch_as(
        app,
        &format!("/api/v1/contacts/{clara_a}"),
        &admin,
        json!({"company": company}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deal_a = entity(
        app,
        "/api/v1/deals",
        json!({"name": "20 seats", "contact": clara_a, "company": company,
               "responsible": team.anna.id}),
    )
    .await;
    let deal_b = entity(
        app,
        "/api/v1/deals",
        json!({"name": "5 seats", "contact": clara_b, "stage": "default-won",
               "responsible": team.ben.id}),
    )
    .await;
    let deals = async |query: &str, token: &str| {
        ids(&get_as(app, &format!("/api/v1/deals?{query}"), token).await)
    };
    assert_eq!(deals("status=open", &admin).await, [deal_a.as_str()]);
    assert_eq!(deals("status=won", &admin).await, [deal_b.as_str()]);
    assert_eq!(
        deals("pipeline=default&stage=default-new", &admin).await,
        [deal_a.as_str()]
    );
    assert_eq!(
        deals(&format!("contact={clara_b}"), &admin).await,
        [deal_b.as_str()]
    );
    assert_eq!(
        deals(&format!("company={company}"), &admin).await,
        [deal_a.as_str()]
    );
    assert_eq!(
        names(&get_as(app, &format!("/api/v1/contacts?company={company}"), &admin).await),
        ["Clara Müller"]
    );
    // A deal is found by its customer's name and number; Ben's stays hidden from Anna.
    assert_eq!(
        deals("q=clara", &admin).await.len(),
        2,
        "both Claras' deals"
    );
    assert_eq!(deals("q=clara", &team.anna.token).await, [deal_a.as_str()]);
    assert_eq!(deals("q=12345678", &team.anna.token).await, [deal_a]);
    assert_eq!(
        deals("q=m%C3%BCller%20bau", &team.ben.token).await,
        Vec::<String>::new()
    );
}

/// Pushes one call event as the PBX would, at a given time.
async fn push(
    app: &TestApp,
    call_id: &str,
    event: &str,
    from: &str,
    at: &str,
    extra: Value,
) -> Value {
    let mut body = json!({"call_id": call_id, "event": event, "direction": "incoming",
                          "from": from, "to": "+4930901820", "at": at});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    app.post_ok("/api/v1/calls/events", body, StatusCode::OK)
        .await
}

/// The call log's filters (`mine`, `outcome`, `missed`, `number` in any format, `from` and
/// `to` as instants or whole UTC days, `entity`) narrow what the caller may see and never
/// widen it: an agent at `own` gets none of a colleague's calls (A1, A2), and `mine` is
/// the caller's own calls even for an admin.
async fn a1_a2_call_log_filters_show_an_agent_none_of_a_colleagues_calls(app: &TestApp) {
    let team = team(app).await;
    let clara = entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Clara", "phones": ["+4917610000001"], "responsible": team.anna.id}),
    )
    .await;
    entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Bodo", "phones": ["+4917620000002"], "responsible": team.ben.id}),
    )
    .await;
    let mut calls = Vec::new();
    for (call_id, from, at, answered, outcome) in [
        (
            "c1",
            "+4917610000001",
            "2026-01-10T09:00:00Z",
            true,
            "answered",
        ),
        (
            "c2",
            "+4917610000001",
            "2026-01-11T10:00:00Z",
            false,
            "missed",
        ),
        (
            "c3",
            "+4917620000002",
            "2026-01-11T11:00:00Z",
            false,
            "missed",
        ),
        (
            "c4",
            "+4915199999999",
            "2026-01-12T08:00:00Z",
            false,
            "busy",
        ),
    ] {
        let rung = push(app, call_id, "ringing", from, at, json!({})).await;
        if answered {
            push(
                app,
                call_id,
                "answered",
                from,
                at,
                json!({"user": team.anna.id}),
            )
            .await;
        }
        push(app, call_id, "ended", from, at, json!({"outcome": outcome})).await;
        calls.push(rung["call"]["id"].as_str().unwrap().to_owned());
    }
    let [c1, c2, c3, c4] = [&calls[0], &calls[1], &calls[2], &calls[3]].map(String::clone);
    let log = async |query: &str, token: &str| {
        ids(&get_as(app, &format!("/api/v1/calls?{query}"), token).await)
    };
    let admin = app.admin.clone();

    assert_eq!(log("missed=true", &admin).await, [c3.as_str(), c2.as_str()]);
    assert_eq!(
        log("missed=true", &team.anna.token).await,
        [c2.as_str()],
        "A2: not Ben's missed call"
    );
    assert_eq!(log("missed=true", &team.ben.token).await, [c3.as_str()]);
    assert_eq!(
        log("missed=false", &admin).await,
        [c4.as_str(), c1.as_str()]
    );
    assert_eq!(log("outcome=busy", &admin).await, [c4.as_str()]);
    assert_eq!(
        log("outcome=busy", &team.anna.token).await,
        Vec::<String>::new(),
        "the unknown caller's call is nobody's"
    );
    assert_eq!(
        log("mine=true", &team.anna.token).await,
        [c2.as_str(), c1.as_str()]
    );
    assert_eq!(
        log("mine=true&outcome=answered", &team.anna.token).await,
        [c1.as_str()]
    );
    // An admin sees every call, but `mine` only theirs: none rang Ada.
    let ada = app
        .create_user("Ada", "ada@firma.test", "admin", "109")
        .await;
    let ada = app.token_for(&ada).await;
    assert_eq!(log("", &ada).await.len(), 4);
    assert_eq!(log("mine=true", &ada).await, Vec::<String>::new());

    // Our number in any format.
    assert_eq!(log("number=030%20901820", &admin).await.len(), 4);
    assert_eq!(
        log("number=%2B4930901820&missed=true", &team.anna.token).await,
        [c2.as_str()]
    );
    assert_eq!(log("number=040%20111", &admin).await, Vec::<String>::new());
    // Whole UTC days, and instants that count on both sides.
    assert_eq!(
        log("from=2026-01-11&to=2026-01-11", &admin).await,
        [c3.as_str(), c2.as_str()]
    );
    assert_eq!(
        log("from=2026-01-11&to=2026-01-11", &team.ben.token).await,
        [c3.as_str()]
    );
    assert_eq!(log("to=2026-01-10T09:00:00Z", &admin).await, [c1.as_str()]);
    assert_eq!(
        log("from=2026-01-12T08:00:00%2B00:00", &admin).await,
        [c4.as_str()]
    );
    // A customer's calls; a colleague's customer does not exist for an agent at `own`.
    assert_eq!(
        log(&format!("entity=contact:{clara}"), &team.anna.token).await,
        [c2.as_str(), c1.as_str()]
    );
    let (status, body) = call(
        app,
        Method::GET,
        &format!("/api/v1/calls?entity=contact:{clara}"),
        &team.ben.token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Paging walks a filtered log.
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get_as(
            app,
            &format!("/api/v1/calls?number=%2B4930901820&limit=1{cursor}"),
            &admin,
        )
        .await;
        walked.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(walked, [c4, c3, c2, c1]);

    for (query, field) in [
        ("outcome=hung_up", "outcome"),
        ("outcome=answered&missed=true", "missed"),
        ("number=none", "number"),
        ("from=yesterday", "from"),
        ("from=2026-01-12&to=2026-01-11", "to"),
        ("entity=person:1", "entity"),
        ("mine=yes", "mine"),
    ] {
        let (status, body) =
            call(app, Method::GET, &format!("/api/v1/calls?{query}"), &admin).await;
        assert_eq!(
            refused(status, &body),
            (
                StatusCode::BAD_REQUEST,
                "invalid_query".into(),
                field.into()
            ),
            "{query}: {body}"
        );
    }
    let (status, body) = call(app, Method::GET, "/api/v1/calls?mine=true", &admin).await;
    assert_eq!(
        refused(status, &body),
        (
            StatusCode::BAD_REQUEST,
            "invalid_query".into(),
            "mine".into()
        ),
        "the bootstrap token is nobody's: {body}"
    );
}

/// Hands a raw message to the forward address's intake (E16), as the SMTP listener does:
/// mail an outsider writes to it is theirs, incoming, and read. Returns the e-mail's id.
async fn forwarded(app: &TestApp, raw: String) -> String {
    let address = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = &app.app.as_ref().expect("running").store;
    let outcome = leadline::mail::take_forwarded(
        store,
        &leadline::events::EventBus::default(),
        raw.into_bytes(),
        &address,
    )
    .await
    .expect("the message is stored");
    outcome.email.expect("a new message")
}

/// Stores an unread message from `customer` as a mailbox's poller does (the store's
/// intake, without an IMAP server). Returns the e-mail's id.
async fn unread_mail(app: &TestApp, raw: &str, customer: &str) -> String {
    use leadline::store::{AttachmentInfo, IncomingEmail, MailOrigin};
    let parsed = leadline::mail::parse(raw.as_bytes()).expect("a message");
    let email = IncomingEmail {
        origin: MailOrigin::Forward { employee: None },
        message_id: parsed.message_id.clone(),
        in_reply_to: None,
        thread_root: parsed.message_id.clone(),
        direction: leadline::crm::model::Direction::Incoming,
        from: customer.to_owned(),
        from_name: None,
        to: Vec::new(),
        cc: Vec::new(),
        subject: parsed.subject.clone().unwrap_or_default(),
        received_at: leadline::store::now_ms(),
        seen: false,
        attachments: parsed
            .attachments
            .iter()
            .map(|a| AttachmentInfo {
                name: a.file_name.clone(),
                content_type: a.content_type.clone(),
                size: a.size() as u64,
            })
            .collect(),
        raw: raw.as_bytes().to_vec(),
        customers: vec![customer.to_owned()],
    };
    let store = &app.app.as_ref().expect("running").store;
    let mut outcomes = store.ingest_emails(&[email]).await.expect("stored");
    outcomes.pop().and_then(|o| o.email).expect("a new message")
}

/// "My work": `?mine=true&completed=false` lists the open activities the caller is
/// responsible for — call-backs of missed calls, a voicemail (with its recording), e-mail
/// to answer — newest first, paged, with their entities and their call or e-mail;
/// nobody else's, admins included; completing one takes it off. A colleague's open work
/// is not the agent's, nor visible to them (A2).
async fn a2_my_work_lists_my_open_call_backs_voicemail_and_mail(app: &TestApp) {
    let team = team(app).await;
    let clara = entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Clara", "phones": ["+4917610000001"], "emails": ["clara@kunde.test"],
               "responsible": team.anna.id}),
    )
    .await;
    entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Bodo", "phones": ["+4917620000002"], "responsible": team.ben.id}),
    )
    .await;
    // Answered: done. Missed: a call-back. Bodo's missed call is Ben's.
    let mut calls = Vec::new();
    for (call_id, from, answered) in [
        ("w1", "+4917610000001", true),
        ("w2", "+4917610000001", false),
        ("w3", "+4917620000002", false),
        ("w4", "+4917610000001", false),
    ] {
        let at = "2026-02-02T09:00:00Z";
        let rung = push(app, call_id, "ringing", from, at, json!({})).await;
        if answered {
            push(
                app,
                call_id,
                "answered",
                from,
                at,
                json!({"user": team.anna.id}),
            )
            .await;
        }
        push(app, call_id, "ended", from, at, json!({})).await;
        calls.push(rung["call"]["id"].as_str().unwrap().to_owned());
    }
    // The last missed call left a voicemail: the call-back plays it.
    let store = &app.app.as_ref().expect("running").store;
    store
        .set_call_media(
            "w4",
            None,
            Some(&leadline::store::StoredRecording {
                file: "w4.wav".into(),
                duration_ms: 4_200,
                voicemail: true,
            }),
        )
        .await
        .unwrap();
    let email = unread_mail(
        app,
        "From: Clara <clara@kunde.test>\r\nTo: Sales <sales@firma.test>\r\n\
         Subject: Offer?\r\nMessage-ID: <offer-1@kunde.test>\r\n\r\nWhat does it cost?\r\n",
        "clara@kunde.test",
    )
    .await;

    let work = get_as(
        app,
        "/api/v1/activities?mine=true&completed=false",
        &team.anna.token,
    )
    .await;
    let items = work["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "two call-backs and a mail: {work}");
    // Newest first: the mail, the voicemail, the missed call.
    assert_eq!(items[0]["kind"], "email", "{work}");
    assert_eq!(items[0]["email"], json!(email), "{work}");
    assert_eq!(items[0]["call"], Value::Null);
    assert_eq!(items[1]["call"], json!(calls[3]), "{work}");
    assert_eq!(
        items[1]["recording"],
        json!(format!("/api/v1/calls/{}/recording", calls[3])),
        "the voicemail is played from the call: {work}"
    );
    assert_eq!(items[1]["email"], Value::Null);
    assert_eq!(items[2]["call"], json!(calls[1]), "{work}");
    assert_eq!(items[2]["recording"], Value::Null, "{work}");
    for item in items {
        assert_eq!(
            item["entities"],
            json!([format!("contact:{clara}")]),
            "{item}"
        );
        assert_eq!(item["completed"], false);
        assert_eq!(item["responsible"], json!(team.anna.id));
    }
    // Paged like every list.
    let first = get_as(
        app,
        "/api/v1/activities?mine=true&completed=false&limit=2",
        &team.anna.token,
    )
    .await;
    let next = first["next"].as_str().expect("a next page").to_owned();
    let rest = get_as(
        app,
        &format!("/api/v1/activities?mine=true&completed=false&limit=2&cursor={next}"),
        &team.anna.token,
    )
    .await;
    let mut walked = ids(&first);
    walked.extend(ids(&rest));
    assert_eq!(walked, ids(&work));
    // All of Anna's work, done included; Ben's is his.
    let all = get_as(app, "/api/v1/activities?mine=true", &team.anna.token).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4, "{all}");
    let bens = get_as(
        app,
        "/api/v1/activities?mine=true&completed=false",
        &team.ben.token,
    )
    .await;
    assert_eq!(bens["items"].as_array().unwrap().len(), 1, "{bens}");
    assert_eq!(bens["items"][0]["call"], json!(calls[2]));

    // Completing the missed call's call-back takes it off the open work.
    let done = items[2]["id"].as_str().unwrap();
    let (status, body) = patch_as(
        app,
        &format!("/api/v1/activities/{done}"),
        &team.anna.token,
        json!({"completed": true}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let work = get_as(
        app,
        "/api/v1/activities?mine=true&completed=false",
        &team.anna.token,
    )
    .await;
    assert_eq!(work["items"].as_array().unwrap().len(), 2, "{work}");

    // A2: Clara handed to Ben; Anna's old activities on her are no longer Anna's to see,
    // even though Anna is still their responsible.
    let (status, body) = patch_as(
        app,
        &format!("/api/v1/contacts/{clara}"),
        &app.admin,
        json!({"responsible": team.ben.id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let work = get_as(app, "/api/v1/activities?mine=true", &team.anna.token).await;
    assert_eq!(work["items"], json!([]), "{work}");

    // The bootstrap token is nobody; without `mine` or an entity there is no list.
    let (status, body) = call(app, Method::GET, "/api/v1/activities?mine=true", &app.admin).await;
    assert_eq!(
        refused(status, &body),
        (
            StatusCode::BAD_REQUEST,
            "invalid_query".into(),
            "mine".into()
        )
    );
    for query in ["", "?completed=false", "?mine=false"] {
        let (status, body) = call(
            app,
            Method::GET,
            &format!("/api/v1/activities{query}"),
            &team.anna.token,
        )
        .await;
        assert_eq!(
            refused(status, &body),
            (
                StatusCode::BAD_REQUEST,
                "invalid_query".into(),
                "entity".into()
            ),
            "{query}: {body}"
        );
    }
}

/// An e-mail's attachment is downloaded with its bytes, its stored type and its name as
/// sent (RFC 6266/5987), never sniffed; by whoever may read the message. A colleague who
/// may not see the customer gets 404 for the attachment as for the message (A2), and an
/// index the message does not have is 404 too.
async fn a2_an_attachment_is_served_to_who_may_read_the_mail(app: &TestApp) {
    use base64::Engine as _;

    let team = team(app).await;
    entity(
        app,
        "/api/v1/contacts",
        json!({"name": "Clara", "emails": ["clara@kunde.test"], "responsible": team.anna.id}),
    )
    .await;
    let pdf: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let raw = format!(
        "From: Clara <clara@kunde.test>\r\nTo: Sales <sales@firma.test>\r\n\
         Subject: Unterlagen\r\nMessage-ID: <files-1@kunde.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei.\r\n\
         --b\r\nContent-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename*=UTF-8''Angebot%20M%C3%BCller.pdf\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n\
         --b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
         Content-Disposition: attachment; filename=\"notes.txt\"\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n--b--\r\n"
    );
    let email = forwarded(app, raw).await;
    let message = get_as(app, &format!("/api/v1/emails/{email}"), &team.anna.token).await;
    assert_eq!(
        message["attachments"],
        json!([
            {"index": 0, "name": "Angebot Müller.pdf", "content_type": "application/pdf", "size": 3000},
            {"index": 1, "name": "notes.txt", "content_type": "text/plain", "size": 7}
        ]),
        "{message}"
    );

    let path = format!("/api/v1/emails/{email}/attachments/0");
    let (status, headers, body) = fetch(app, &path, &team.anna.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, pdf, "the bytes as sent");
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"Angebot M_ller.pdf\"; filename*=UTF-8''Angebot%20M%C3%BCller.pdf"
    );
    let (status, headers, body) = fetch(
        app,
        &format!("/api/v1/emails/{email}/attachments/1"),
        &team.anna.token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(String::from_utf8(body).unwrap(), "Grüße");
    let (status, _, _) = fetch(app, &path, &app.admin).await;
    assert_eq!(status, StatusCode::OK, "admins read CRM mail");

    // A2: Ben may not see Clara, so her mail and its files do not exist for him.
    for path in [format!("/api/v1/emails/{email}"), path.clone()] {
        let (status, body) = call(app, Method::GET, &path, &team.ben.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    for index in ["2", "x", "-1"] {
        let (status, body) = call(
            app,
            Method::GET,
            &format!("/api/v1/emails/{email}/attachments/{index}"),
            &team.anna.token,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{index}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// A PostgreSQL database name for a test: test names can be longer than the 63 bytes of
/// an identifier, so a long one is cut and told apart by a hash of the whole.
fn database_name(test: &str) -> String {
    let hash = test.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "console_{}_{:08x}",
        &test[..test.len().min(40)],
        hash as u32
    )
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

on_both!(
    a1_a2_a_note_on_a_call_needs_the_rights_that_complete_it,
    a1_search_finds_names_addresses_and_numbers_of_what_the_agent_sees,
    a1_a2_call_log_filters_show_an_agent_none_of_a_colleagues_calls,
    a2_my_work_lists_my_open_call_backs_voicemail_and_mail,
    a2_an_attachment_is_served_to_who_may_read_the_mail,
);
