//! Call set-up from memory: trunks, numbers, queues and registered devices are read from
//! the gateway's snapshot, which every change through the API (or through another
//! process on the same PostgreSQL) keeps current, and nothing but the CRM match touches
//! the database before the first phone rings. Driven with raw SIP over UDP: a carrier
//! socket sends the INVITEs, a phone socket registers and answers 486.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::calls_sip::{CALLER, NUMBER};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// How long one SIP answer may take on a busy machine.
const ANSWER: Duration = Duration::from_secs(10);

/// A UDP party talking to the gateway.
struct Party {
    socket: UdpSocket,
    local: SocketAddr,
    gw: SocketAddr,
}

impl Party {
    async fn new(gw: SocketAddr) -> Party {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        Party { socket, local, gw }
    }

    async fn send(&self, text: &str) {
        self.socket.send_to(text.as_bytes(), self.gw).await.unwrap();
    }

    /// The next message `pick` accepts and where it came from, within `within`; others
    /// (keep-alive OPTIONS, retransmissions, 100 Trying) are skipped. `Err`: what was
    /// skipped, for the failure's message.
    async fn next_from(
        &self,
        within: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Result<(String, SocketAddr), String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        let mut skipped = String::new();
        loop {
            let Ok(Ok((n, from))) =
                tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
            else {
                return Err(skipped);
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pick(&text) {
                return Ok((text, from));
            }
            skipped.push_str(&text);
            skipped.push_str("\n----\n");
        }
    }

    async fn next(&self, within: Duration, pick: impl Fn(&str) -> bool) -> Option<String> {
        self.next_from(within, pick)
            .await
            .ok()
            .map(|(text, _)| text)
    }
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    message
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {response}"))
}

/// The carrier calls our number; the final status it gets (ACKed).
async fn call(carrier: &Party, call_id: &str) -> u16 {
    let invite = start_call(carrier, call_id).await;
    finish_call(carrier, call_id, &invite).await
}

async fn start_call(carrier: &Party, call_id: &str) -> String {
    let (local, gw) = (carrier.local, carrier.gw);
    let invite = format!(
        "INVITE sip:{NUMBER}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:{CALLER}@{local}>;tag=c-{call_id}\r\nTo: <sip:{NUMBER}@{gw}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{local}>\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    carrier.send(&invite).await;
    invite
}

/// Waits for the call's final answer and ACKs it (RFC 3261 §17.1.1.3).
async fn finish_call(carrier: &Party, call_id: &str, invite: &str) -> u16 {
    let wanted = format!("call-id: {}", call_id.to_ascii_lowercase());
    let answer = match carrier
        .next_from(ANSWER, |m| {
            m.starts_with("SIP/2.0 ")
                && status(m) >= 200
                && m.to_ascii_lowercase().contains(&wanted)
        })
        .await
    {
        Ok((answer, _)) => answer,
        Err(seen) => panic!("no final answer to {call_id}; the carrier saw: {seen}"),
    };
    let ack = format!(
        "ACK sip:{NUMBER}@{} SIP/2.0\r\n{}\r\n{}\r\n{}\r\n{}\r\nCSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        carrier.gw,
        header(invite, "Via"),
        header(invite, "From"),
        header(&answer, "To"),
        header(invite, "Call-ID"),
    );
    carrier.send(&ack).await;
    status(&answer)
}

/// A softphone registered with the gateway as `extension`, answering 486 to every call.
struct Phone {
    party: Party,
    extension: String,
    password: String,
    cseq: std::cell::Cell<u32>,
}

impl Phone {
    async fn register(gw: SocketAddr, extension: &str, password: &str) -> Phone {
        let phone = Phone {
            party: Party::new(gw).await,
            extension: extension.to_owned(),
            password: password.to_owned(),
            cseq: std::cell::Cell::new(0),
        };
        phone.send_register(300).await;
        phone
    }

    async fn unregister(&self) {
        self.send_register(0).await;
    }

    /// REGISTER, the digest challenge, REGISTER with credentials, 200.
    async fn send_register(&self, expires: u32) {
        let (gw, local, ext) = (self.party.gw, self.party.local, &self.extension);
        let call_id = format!("reg-{ext}-{local}");
        let contact = if expires == 0 {
            "*".to_owned()
        } else {
            format!("<sip:{ext}@{local}>")
        };
        let request = |cseq: u32, authorization: &str| {
            format!(
                "REGISTER sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-reg-{ext}-{cseq}\r\n\
                 From: <sip:{ext}@{gw}>;tag=ph-{ext}\r\nTo: <sip:{ext}@{gw}>\r\nCall-ID: {call_id}\r\n\
                 CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nMax-Forwards: 70\r\n\
                 Expires: {expires}\r\n{authorization}Content-Length: 0\r\n\r\n"
            )
        };
        let next_cseq = || {
            self.cseq.set(self.cseq.get() + 1);
            self.cseq.get()
        };
        let is_register_answer = |m: &str| m.starts_with("SIP/2.0 ") && m.contains("REGISTER");
        self.party.send(&request(next_cseq(), "")).await;
        let challenge = self
            .party
            .next(ANSWER, is_register_answer)
            .await
            .expect("a challenge");
        assert_eq!(status(&challenge), 401, "{challenge}");
        let offered = header(&challenge, "WWW-Authenticate")
            .split_once(':')
            .unwrap()
            .1
            .trim()
            .to_owned();
        let answer = leadline::sip::digest::answer(
            &offered,
            "REGISTER",
            &format!("sip:{gw}"),
            ext,
            &self.password,
            "setupcnonce",
            self.cseq.get(),
        )
        .unwrap();
        let cseq = next_cseq();
        self.party
            .send(&request(cseq, &format!("Authorization: {answer}\r\n")))
            .await;
        let ok = self
            .party
            .next(ANSWER, |m| {
                is_register_answer(m) && m.contains(&format!("CSeq: {cseq} REGISTER"))
            })
            .await
            .expect("the REGISTER's answer");
        assert_eq!(status(&ok), 200, "{ok}");
    }

    /// The gateway's INVITE to this phone, answered 486 Busy Here.
    async fn busy(&self) -> String {
        let (invite, from) = self
            .party
            .next_from(ANSWER, |m| m.starts_with("INVITE "))
            .await
            .expect("the phone rings");
        let to = header(&invite, "To");
        let busy = format!(
            "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{to};tag=busy\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
            header(&invite, "Via"),
            header(&invite, "From"),
            header(&invite, "Call-ID"),
            header(&invite, "CSeq"),
        );
        // To the gateway that called, which may not be the one registered with.
        self.party
            .socket
            .send_to(busy.as_bytes(), from)
            .await
            .unwrap();
        invite
    }
}

async fn patch(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, value) = app
        .request(reqwest::Method::PATCH, path, Some(&app.admin), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "PATCH {path}: {value}");
    value
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

async fn agent(app: &TestApp, name: &str, extension: &str) -> String {
    id(&app
        .post_ok(
            "/api/v1/users",
            json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()),
                   "role": "agent", "extension": extension,
                   "sip_password": format!("pw-{extension}-secret")}),
            StatusCode::CREATED,
        )
        .await)
}

/// T2, T5: each change made through the API is what the very next INVITE is routed by:
/// a trunk's allowed addresses, a new number, a phone registering, a queue's members, a
/// phone un-registering. No waiting in between: the snapshot is current when the API
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_t5_a_change_through_the_api_routes_the_very_next_invite() {
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    let anna = agent(&app, "Anna", "101").await;
    let queue = id(&app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await);
    let trunk = id(&app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "192.0.2.10",
                   "register": false, "allowed_ips": ["192.0.2.10"]}),
            StatusCode::CREATED,
        )
        .await);
    let carrier = Party::new(gw).await;

    // Not from the trunk's address: an agent's call, which must authenticate.
    assert_eq!(call(&carrier, "setup-1").await, 407);
    patch(
        &app,
        &format!("/api/v1/trunks/{trunk}"),
        json!({"allowed_ips": ["127.0.0.1"]}),
    )
    .await;
    // Now the trunk's: an incoming call, but for no number of ours.
    assert_eq!(call(&carrier, "setup-2").await, 404);
    app.post_ok(
        "/api/v1/numbers",
        // Nothing created: the caller stays unknown, so only the queue rings (T5).
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk,
               "media_relay": false, "lead_creation": "off"}),
        StatusCode::CREATED,
    )
    .await;
    // Our number, its queue has Anna, whose phone is not registered: nobody to ring.
    assert_eq!(call(&carrier, "setup-3").await, 480);

    let phone = Phone::register(gw, "101", "pw-101-secret").await;
    let invite = start_call(&carrier, "setup-4").await;
    let rung = phone.busy().await;
    assert!(rung.starts_with("INVITE sip:101@"), "{rung}");
    assert_eq!(finish_call(&carrier, "setup-4", &invite).await, 486);

    patch(
        &app,
        &format!("/api/v1/queues/{queue}"),
        json!({"members": []}),
    )
    .await;
    assert_eq!(call(&carrier, "setup-5").await, 480, "nobody in the queue");
    patch(
        &app,
        &format!("/api/v1/queues/{queue}"),
        json!({"members": [anna]}),
    )
    .await;
    let invite = start_call(&carrier, "setup-6").await;
    phone.busy().await;
    assert_eq!(finish_call(&carrier, "setup-6", &invite).await, 486);

    phone.unregister().await;
    assert_eq!(call(&carrier, "setup-7").await, 480, "Anna's phone is gone");
    app.stop().await;
}

/// The call set-up path makes no database query of its own before the first phone
/// rings: trunk, number, media settings, queue and devices come from memory, and what
/// the phone shows (the known caller's CRM name) from the intake's answer. Debug builds
/// record every query the tasks of a call's set-up start; the intake (the CRM match)
/// runs in a task of its own. Read while the agent's phone rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_the_crm_match_touches_the_database_before_the_first_phone_rings() {
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    let store = app.app.as_ref().expect("running").store.clone();
    let anna = agent(&app, "Anna", "101").await;
    let queue = id(&app
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await);
    let trunk = id(&app
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "127.0.0.1",
                   "register": false, "allowed_ips": ["127.0.0.1"]}),
            StatusCode::CREATED,
        )
        .await);
    app.post_ok(
        "/api/v1/numbers",
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk}),
        StatusCode::CREATED,
    )
    .await;
    app.post_ok(
        "/api/v1/contacts",
        json!({"name": "Maria Muster", "phones": [CALLER], "responsible": anna}),
        StatusCode::CREATED,
    )
    .await;
    let phone = Phone::register(gw, "101", "pw-101-secret").await;

    // The recorder works: a marked task's store read is named.
    let control = tokio::spawn({
        let store = store.clone();
        let trunk = leadline::crm::model::TrunkId(trunk.clone());
        async move {
            let _mark = store.watch_call_path("control");
            store.get_trunk(&trunk).await.expect("the trunk reads");
            store.call_path_queries("control")
        }
    })
    .await
    .unwrap();
    if cfg!(debug_assertions) {
        let control = control.expect("the control task is marked");
        assert!(
            control
                .iter()
                .any(|q| q.starts_with("src/store/routing.rs")),
            "{control:?}"
        );
    }

    let carrier = Party::new(gw).await;
    let invite = start_call(&carrier, "setup-reads").await;
    let rung = phone
        .party
        .next(ANSWER, |m| m.starts_with("INVITE "))
        .await
        .expect("Anna's phone rings");
    if cfg!(debug_assertions) {
        assert_eq!(
            store.call_path_queries("setup-reads"),
            Some(Vec::new()),
            "the set-up path queried the database before the phone rang"
        );
    }
    assert!(
        header(&rung, "From").contains("\"Maria Muster\""),
        "the CRM's name, from the intake's answer: {rung}"
    );
    assert!(
        header(&rung, "Call-Info").contains("/api/v1/contacts/"),
        "{rung}"
    );
    let to = header(&rung, "To");
    let busy = format!(
        "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{to};tag=busy\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header(&rung, "Via"),
        header(&rung, "From"),
        header(&rung, "Call-ID"),
        header(&rung, "CSeq"),
    );
    phone.party.send(&busy).await;
    assert_eq!(finish_call(&carrier, "setup-reads", &invite).await, 486);
    app.stop().await;
}

/// T2, T5 across processes: two gateways on one PostgreSQL. A number, a phone's
/// registration, a queue's members and an un-registration made through the first are
/// used by the second, which learns of them by notification, without a restart and
/// without reading the database on its call path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_t5_a_change_through_one_process_routes_calls_of_the_other() {
    let server = crate::common::postgres::PgServer::shared();
    let url = server.create_database("call_setup_two_processes").await;
    let a = TestApp::spawn_for_sipp_with(|config| config.database_url = url.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.database_url = url;
    config.sip_domain = "leadline.test".to_owned();
    let b = leadline::App::start(config)
        .await
        .expect("the second gateway starts");
    let within = Duration::from_secs(5);

    let anna = agent(&a, "Anna", "101").await;
    let queue = id(&a
        .post_ok(
            "/api/v1/queues",
            json!({"name": "Sales", "members": [anna]}),
            StatusCode::CREATED,
        )
        .await);
    let trunk = id(&a
        .post_ok(
            "/api/v1/trunks",
            json!({"name": "Carrier", "kind": "carrier", "host": "127.0.0.1",
                   "register": false, "allowed_ips": ["127.0.0.1"]}),
            StatusCode::CREATED,
        )
        .await);
    a.post_ok(
        "/api/v1/numbers",
        // Nothing created: the caller stays unknown, so only the queue rings (T5).
        json!({"number": NUMBER, "default_country": "DE", "queue": queue, "trunk": trunk,
               "media_relay": false, "lead_creation": "off"}),
        StatusCode::CREATED,
    )
    .await;
    wait_until(within, "the second gateway to know the number", || async {
        b.store.cached_number(NUMBER)
    })
    .await;

    let phone = Phone::register(a.sip_addr(), "101", "pw-101-secret").await;
    let anna_id = leadline::crm::model::UserId(anna.clone());
    let live = |store: &leadline::store::Store| {
        store.cached_user_bindings(&anna_id, leadline::store::now_ms())
    };
    wait_until(
        within,
        "the second gateway to know Anna's phone",
        || async { (!live(&b.store).is_empty()).then_some(()) },
    )
    .await;
    let carrier = Party::new(b.sip_addr).await;
    let invite = start_call(&carrier, "two-1").await;
    let rung = phone.busy().await;
    assert!(rung.starts_with("INVITE sip:101@"), "{rung}");
    assert_eq!(finish_call(&carrier, "two-1", &invite).await, 486);

    patch(
        &a,
        &format!("/api/v1/queues/{queue}"),
        json!({"members": []}),
    )
    .await;
    let queue_id = leadline::crm::model::QueueId(queue.clone());
    wait_until(
        within,
        "the second gateway to see the queue emptied",
        || async {
            b.store
                .cached_queue_members(&queue_id)
                .filter(Vec::is_empty)
        },
    )
    .await;
    assert_eq!(call(&carrier, "two-2").await, 480, "nobody in the queue");

    patch(
        &a,
        &format!("/api/v1/queues/{queue}"),
        json!({"members": [anna]}),
    )
    .await;
    phone.unregister().await;
    wait_until(
        within,
        "the second gateway to forget Anna's phone",
        || async {
            (live(&b.store).is_empty()
                && b.store.cached_queue_members(&queue_id) == Some(vec![anna_id.clone()]))
            .then_some(())
        },
    )
    .await;
    assert_eq!(call(&carrier, "two-3").await, 480, "Anna's phone is gone");
    b.shutdown().await.expect("the second gateway stops");
    a.stop().await;
}
