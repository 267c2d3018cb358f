//! `leadline backup` and `leadline restore`, the real binary, around a running gateway:
//! a backup taken while a recorded call is being written, the data dir wiped, restored
//! and the gateway started on it again.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::calls_sip::{CALLER, Phone, Sipp, carrier_call_from, line};
use crate::common::wait_until;
use crate::helpers::TestApp;
use crate::mail::swaks;

/// Runs `leadline ARGS --data-dir DIR`; whether it succeeded and what it printed.
async fn leadline(args: &[&str], data_dir: &Path) -> (bool, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_leadline"))
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("LEADLINE_DATABASE_URL")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("leadline finishes within its deadline")
    .expect("leadline runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn items(app: &TestApp, path: &str) -> Vec<Value> {
    app.get_ok(path).await["items"].as_array().unwrap().clone()
}

async fn recording_bytes(app: &TestApp, path: &str) -> Vec<u8> {
    let response = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.bytes().await.unwrap().to_vec()
}

/// A recorded call from `caller`, answered by Anna; the agent's audio socket is held
/// until the call ends.
fn recorded_call(phone: &Phone, media: &UdpSocket, caller: &str, app: &TestApp) -> (Sipp, Sipp) {
    let port = media.local_addr().unwrap().port().to_string();
    let anna = Sipp::start(
        "agent_answer_media.xml",
        phone.port,
        None,
        &["-key", "media", &port],
    );
    let carrier = carrier_call_from(app, caller, "carrier_call_audio.xml", &[]);
    (anna, carrier)
}

async fn finish(calls: (Sipp, Sipp)) {
    let (anna, carrier) = calls;
    let (ok, seen) = carrier.finish().await;
    assert!(ok, "the carrier's call: {seen}");
    let (ok, seen) = anna.finish().await;
    assert!(ok, "Anna's phone: {seen}");
}

/// Calls that have ended with their media kept.
async fn finished_calls(app: &TestApp, count: usize) -> Vec<Value> {
    wait_until(
        Duration::from_secs(20),
        "the calls' media to be kept",
        || async {
            let calls = items(app, "/api/v1/calls").await;
            let done = calls
                .iter()
                .filter(|c| c["ended_at"].is_string() && c["media"].is_object())
                .count();
            (done >= count).then_some(calls)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_a_call_is_recorded_restores_every_record_and_recording() {
    let mut app = TestApp::spawn_for_sipp().await;
    line(&app, 30).await;
    let number = app.get_ok("/api/v1/numbers").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/numbers/{number}"),
            Some(&app.admin),
            Some(json!({"recording": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let phone = Phone::register(&app, "101", "pw-101-secret").await;
    let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // A finished recorded call and an e-mail to the forward address.
    finish(recorded_call(&phone, &media, CALLER, &app)).await;
    let address = app.get_ok("/api/v1/settings/forward").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let mail_dir = tempfile::tempdir().unwrap();
    let message = mail_dir.path().join("bcc.eml");
    std::fs::write(
        &message,
        "From: Anna <anna@example.com>\r\nTo: Neukunde <neu@example.org>\r\n\
         Subject: Ihr Angebot\r\nMessage-ID: <backup-1@example.com>\r\n\r\nAnbei.\r\n",
    )
    .unwrap();
    let data = format!("@{}", message.display());
    swaks(
        &app,
        &[
            "--to",
            &address,
            "--from",
            "anna@example.com",
            "--data",
            &data,
        ],
    )
    .await;
    let emails = wait_until(
        Duration::from_secs(20),
        "the e-mail to be taken in",
        || async {
            let emails = items(&app, "/api/v1/emails").await;
            (!emails.is_empty()).then_some(emails)
        },
    )
    .await;
    let calls = finished_calls(&app, 1).await;
    let leads = app.leads().await;
    let users = items(&app, "/api/v1/users").await;
    assert_eq!(
        leads.len(),
        2,
        "the caller's and the recipient's: {leads:?}"
    );
    let recording = calls[0]["recording"]
        .as_str()
        .expect("a recording")
        .to_owned();
    let wav = recording_bytes(&app, &recording).await;
    let files_before = recordings(app.data_dir());
    assert_eq!(files_before.len(), 1, "{:?}", files_before.keys());

    // The backup runs while a second recorded call talks (its recording being written).
    // On a loaded machine Anna's SIPp may bind its port seconds after the gateway first
    // rings it; the ring timeout and this deadline leave room for the INVITE's
    // retransmissions to reach it.
    let second = RefCell::new(recorded_call(&phone, &media, "+4917699999999", &app));
    wait_until(Duration::from_secs(30), "the second call to talk", || {
        let (anna, carrier) = &mut *second.borrow_mut();
        for (side, run) in [("Anna's phone", anna), ("the carrier", carrier)] {
            if let Some(seen) = run.ended_early() {
                panic!("{side} ended before the second call talked: {seen}");
            }
        }
        let app = &app;
        async move {
            let calls = items(app, "/api/v1/calls").await;
            calls
                .iter()
                .any(|c| c["answered_at"].is_string() && c["ended_at"].is_null())
                .then_some(())
        }
    })
    .await;
    let second = second.into_inner();
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = archive_dir.path().join("leadline.tar.gz");
    let archive_arg = archive.to_str().unwrap();
    let (ok, printed) = leadline(&["backup", archive_arg], app.data_dir()).await;
    assert!(ok, "backup: {printed}");
    assert!(printed.contains("written"), "{printed}");
    finish(second).await;
    finished_calls(&app, 2).await;

    app.app.take().unwrap().shutdown().await.unwrap();
    for entry in std::fs::read_dir(app.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let (ok, printed) = leadline(&["restore", archive_arg], app.data_dir()).await;
    assert!(ok, "restore: {printed}");
    // Only into an empty data dir: a second restore is refused and changes nothing.
    let (ok, refused) = leadline(&["restore", archive_arg], app.data_dir()).await;
    assert!(!ok && refused.contains("is not empty"), "{refused}");

    app.restart().await;
    let restored_calls = items(&app, "/api/v1/calls").await;
    let first = restored_calls
        .iter()
        .find(|c| c["id"] == calls[0]["id"])
        .unwrap_or_else(|| panic!("the first call is back: {restored_calls:?}"));
    assert_eq!(first, &calls[0]);
    assert!(
        restored_calls.len() <= 2,
        "at most the call that talked during the backup besides: {restored_calls:?}"
    );
    assert_eq!(items(&app, "/api/v1/emails").await, emails);
    let restored_users = items(&app, "/api/v1/users").await;
    assert_eq!(restored_users, users);
    let restored_leads = app.leads().await;
    for lead in &leads {
        assert!(
            restored_leads.contains(lead),
            "{lead} is back: {restored_leads:?}"
        );
    }
    assert_eq!(recording_bytes(&app, &recording).await, wav);
    let files_after = recordings(app.data_dir());
    for (name, bytes) in &files_before {
        assert_eq!(files_after.get(name), Some(bytes), "recording {name}");
    }
    app.stop().await;
}

/// The recordings dir's files and their bytes.
fn recordings(data_dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(data_dir.join("recordings"))
        .map(|dir| {
            dir.map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).unwrap(),
                )
            })
            .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_damaged_archive_is_refused_and_leaves_the_data_dir_empty() {
    let app = TestApp::spawn().await;
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = archive_dir.path().join("leadline.tar.gz");
    let archive_arg = archive.to_str().unwrap();
    let (ok, printed) = leadline(&["backup", archive_arg], app.data_dir()).await;
    assert!(ok, "backup: {printed}");
    app.stop().await;

    // An archive whose database copy lost its last bytes: the manifest gives it away.
    let bytes = std::fs::read(&archive).unwrap();
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if entry.path().unwrap().to_str() == Some("database/leadline.db") {
            data.truncate(data.len() - 1);
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        builder.append(&header, data.as_slice()).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    std::fs::write(&archive, gz.finish().unwrap()).unwrap();

    let target = tempfile::tempdir().unwrap();
    let (ok, refused) = leadline(&["restore", archive_arg], target.path()).await;
    assert!(!ok, "{refused}");
    assert!(
        refused.contains("database/leadline.db: size or SHA-256 differs"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_dir(target.path()).unwrap().count(),
        0,
        "nothing of the damaged archive is left"
    );
}
