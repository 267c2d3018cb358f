//! `POST /contacts/import`: CSV and vCard files become contacts, matched like calls and
//! e-mails (M1–M8), on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::postgres::PgServer;
use crate::helpers::TestApp;

const BAD_ADDRESSES: usize = 5;

/// `n`-th generated Berlin number, in E.164.
fn phone(n: usize) -> String {
    format!("+4930{:08}", 20_000_000 + n)
}

/// The same number as a person would type it from abroad.
fn phone_spelled(n: usize) -> String {
    format!("0049 30 {:08}", 20_000_000 + n)
}

async fn import(
    app: &TestApp,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(format!("{}/api/v1/contacts/import{query}", app.base))
        .bearer_auth(&app.admin)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("import sent");
    let status = resp.status();
    (status, resp.json().await.expect("JSON answer"))
}

async fn count_contacts(app: &TestApp) -> usize {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let page = app
            .get_ok(&format!("/api/v1/contacts?limit=500{cursor}"))
            .await;
        count += page["items"].as_array().expect("items").len();
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return count,
        }
    }
}

/// 10,000 rows: 8,890 new people, 1,000 repeats of them in another spelling (merged), 100
/// rows of existing contacts (completed), and 10 rows skipped: bad addresses, an
/// employee's address (M6), a lead's number, rows with nothing to match on.
async fn m7_m6_ten_thousand_rows_import_without_a_duplicate(app: &TestApp) {
    for i in 0..100 {
        app.post_ok(
            "/api/v1/contacts",
            json!({"name": format!("Existing {i}"), "phones": [phone(50_000 + i)]}),
            StatusCode::CREATED,
        )
        .await;
    }
    app.post_ok(
        "/api/v1/leads",
        json!({"name": "A lead", "phones": [phone(90_000)]}),
        StatusCode::CREATED,
    )
    .await;
    app.create_user("Anna", "anna@example.com", "agent", "101")
        .await;

    let mut rows: Vec<String> = Vec::new();
    for k in 0..8_000 {
        rows.push(format!("p{k}@import.test,Person {k},{},,", phone(k)));
    }
    for k in 0..1_000 {
        // The same person again, spelled otherwise and with a second address.
        rows.push(format!(
            "\"P{k}@Import.test; alt{k}@import.test\",,{},,",
            phone_spelled(k)
        ));
    }
    for i in 0..100 {
        rows.push(format!(
            "known{i}@import.test,,{},ACME,anna@example.com",
            phone(50_000 + i)
        ));
    }
    for k in 8_000..8_890 {
        rows.push(format!("p{k}@import.test,\"Person, {k}\",{},,", phone(k)));
    }
    let first_bad = rows.len() + 2;
    for i in 0..BAD_ADDRESSES {
        rows.push(format!("bad{i}-at-nowhere,Bad,,,"));
    }
    rows.push("ANNA@example.com,Anna herself,,,".to_owned());
    rows.push(format!(",Lead's number,{},,", phone(90_000)));
    for _ in 0..3 {
        rows.push(",Nameless,,,".to_owned());
    }
    assert_eq!(rows.len(), 10_000);
    let csv = format!(
        "email,Name,phone,company,responsible\n{}\n",
        rows.join("\n")
    );
    let expected_skipped: Vec<u64> = (first_bad as u64..first_bad as u64 + 10).collect();

    let (status, preview) =
        import(app, "?dry_run=true", "text/csv", csv.clone().into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["created"], 8_890);
    assert_eq!(preview["updated"], 100);
    let lines: Vec<u64> = preview["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| s["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, expected_skipped, "{}", preview["skipped"]);
    assert_eq!(count_contacts(app).await, 100, "a dry run writes nothing");

    let (status, done) = import(app, "", "text/csv", csv.clone().into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        done, preview,
        "the dry run told exactly what the import did"
    );
    assert_eq!(count_contacts(app).await, 100 + 8_890);
    let skipped = done["skipped"].as_array().expect("skipped");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("bad0-at-nowhere")
    );
    assert!(
        skipped[BAD_ADDRESSES]["reason"]
            .as_str()
            .unwrap()
            .contains("anna@example.com")
    );
    assert!(
        skipped[BAD_ADDRESSES + 1]["reason"]
            .as_str()
            .unwrap()
            .contains("lead:")
    );

    // Rows of one person made one contact with both addresses.
    let merged = app
        .get_ok(&format!(
            "/api/v1/contacts?phone={}",
            phone(7).replace('+', "%2B")
        ))
        .await;
    let merged = merged["items"].as_array().expect("items");
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0]["name"], "Person 7");
    assert_eq!(
        merged[0]["emails"],
        json!(["p7@import.test", "alt7@import.test"])
    );
    // An existing contact was completed: its name kept, address, company and responsible added.
    let known = app
        .get_ok(&format!(
            "/api/v1/contacts?phone={}",
            phone(50_003).replace('+', "%2B")
        ))
        .await;
    let known = &known["items"][0];
    assert_eq!(known["name"], "Existing 3");
    assert_eq!(known["emails"], json!(["known3@import.test"]));
    assert!(known["company"].is_string(), "{known}");
    assert!(known["responsible"].is_string(), "{known}");

    // The same file again finds everybody: nothing new (M7).
    let (status, again) = import(app, "", "text/csv", csv.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["created"], 0);
    assert_eq!(again["updated"], 100 + 8_890);
    assert_eq!(count_contacts(app).await, 100 + 8_890);
}

/// Address books exported by a mail client: people become contacts, an organisation
/// (ORG) a company; the same file twice creates nobody twice (M7).
async fn m7_vcard_address_books_import_once(app: &TestApp) {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/import");
    let contacts = std::fs::read(data.join("contacts.vcf")).expect("contacts.vcf");
    let (status, done) = import(app, "", "text/vcard", contacts.clone()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done, json!({"created": 2, "updated": 0, "skipped": []}));
    let (_, again) = import(app, "", "text/vcard", contacts).await;
    assert_eq!(again, json!({"created": 0, "updated": 2, "skipped": []}));

    let johndoe = std::fs::read(data.join("johndoe.vcf")).expect("johndoe.vcf");
    let (status, done) = import(app, "?dry_run=true", "text/x-vcard", johndoe.clone()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["created"], 1);
    let (_, done) = import(app, "", "text/vcard", johndoe).await;
    assert_eq!(done["created"], 1);
    let found = app
        .get_ok("/api/v1/contacts?email=roundcube%40gmail.com")
        .await;
    let john = &found["items"][0];
    assert_eq!(john["name"], "John Doë");
    let company = john["company"].as_str().expect("company linked");
    let company = app.get_ok(&format!("/api/v1/companies/{company}")).await;
    assert_eq!(company["name"], "roundcube.net");
    assert_eq!(count_contacts(app).await, 3);
}

/// Files that cannot be imported are refused whole, naming what is wrong.
async fn import_refuses_unknown_columns_other_types_and_agents(app: &TestApp) {
    let (status, body) = import(
        app,
        "",
        "text/csv",
        b"name,phone,fax\nA,030 1234567,1\n".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "fax");
    let (status, spec) = app
        .request(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["paths"]["/api/v1/contacts/import"]["post"].is_object());
    let (status, _) = import(app, "", "application/json", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let agent = app
        .create_user("Ben", "ben@example.com", "agent", "102")
        .await;
    let token = app.token_for(&agent).await;
    let resp = app
        .client
        .post(format!("{}/api/v1/contacts/import", app.base))
        .bearer_auth(token)
        .header("Content-Type", "text/csv")
        .body("name,phone\nA,030 1234567\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(count_contacts(app).await, 0);
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let app = super::TestApp::spawn().await;
                super::$name(&app).await;
                app.stop().await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let url = super::PgServer::shared().create_database(stringify!($name)).await;
                let app = super::TestApp::spawn_with_database(&url).await;
                super::$name(&app).await;
                app.stop().await;
            })*
        }
    };
}

on_both!(
    m7_m6_ten_thousand_rows_import_without_a_duplicate,
    m7_vcard_address_books_import_once,
    import_refuses_unknown_columns_other_types_and_agents,
);
