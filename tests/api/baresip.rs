//! One call end to end with a real softphone, relayed and recorded. Debian's `baresip` (1.0) registers
//! as an agent and answers automatically; SIPp is the carrier and holds the call for a
//! known time; the call log must show the answer and that time.
//!
//! baresip 1.0 runs on libre 1.1, whose digest client gives up on a 401 as soon as one
//! of its challenges names an algorithm other than MD5 (`sip_auth_authenticate` returns
//! `ENOSYS`, printed as "Register: Function not implemented"), instead of answering the
//! MD5 one (RFC 8760 §2.4: a client takes the first algorithm it supports). Our registrar
//! offers SHA-256 and MD5, so such a phone needs the gateway's `--sip-digest md5`; that is
//! the setting this test runs with (README, "SIP"). libre supports SHA-256 from 3.12.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use chrono::DateTime;
use leadline::sip::digest::Algorithm;
use serde_json::{Value, json};

use crate::calls_sip::{carrier_call, ended_call, line};
use crate::common::wait_until;
use crate::helpers::TestApp;

/// How long the carrier talks before it hangs up (SIPp's `-d`).
const HOLD: Duration = Duration::from_secs(3);
/// How far the logged talk time may be from [`HOLD`] on a loaded 2-core machine.
const TOLERANCE: Duration = Duration::from_millis(1500);

/// A running `baresip` with its own config dir; killed when dropped.
struct Baresip {
    child: Mutex<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip registering `extension` to the gateway at `gateway` over UDP, with
    /// auto-answer and no sound device: SIP on an ephemeral loopback port, audio through
    /// `aubridge` (a device in memory), PCMU/PCMA.
    fn start(gateway: SocketAddr, extension: &str, password: &str) -> Baresip {
        let dir = tempfile::tempdir().expect("temp dir");
        // `dns_server`: nothing is resolved (every address is literal), but the host's
        // resolv.conf must not matter either.
        let config = "\
            sip_listen 127.0.0.1:0\n\
            dns_server 127.0.0.1:53\n\
            module_path /usr/lib/baresip/modules\n\
            module g711.so\n\
            module aubridge.so\n\
            module account.so\n\
            audio_player aubridge,play\n\
            audio_source aubridge,source\n\
            audio_alert aubridge,alert\n";
        std::fs::write(dir.path().join("config"), config).expect("write baresip config");
        let account = format!(
            "<sip:{extension}@{gateway}>;auth_pass={password};regint=300;answermode=auto\n"
        );
        std::fs::write(dir.path().join("accounts"), account).expect("write baresip accounts");

        let log = dir.path().join("baresip.log");
        let out = std::fs::File::create(&log).expect("baresip log");
        let err = out.try_clone().expect("baresip log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .arg("-v")
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("baresip runs (scripts/test installs baresip-core)");
        Baresip {
            child: Mutex::new(child),
            log,
            _dir: dir,
        }
    }

    /// Everything baresip printed so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with baresip's output when it has exited or its registration failed
    /// (`reg: <aor>: Register: <error>` or `reg: <aor>: <status> <reason>`): nothing to
    /// wait for then.
    fn assert_registering(&self) {
        let status = self.child.lock().unwrap().try_wait();
        if let Ok(Some(status)) = status {
            panic!("baresip exited ({status}):\n{}", self.log());
        }
        let log = self.log();
        if log.contains("reg: sip:") {
            panic!("baresip's registration failed:\n{log}");
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The registration of `extension` from a baresip, once the gateway lists it.
async fn baresip_binding(app: &TestApp, phone: &Baresip, extension: &str) -> Value {
    wait_until(
        Duration::from_secs(20),
        "baresip's registration",
        || async {
            phone.assert_registering();
            let registrations = app.get_ok("/api/v1/registrations").await;
            registrations["items"]
                .as_array()?
                .iter()
                .find(|r| {
                    r["aor"] == extension
                        && r["user_agent"]
                            .as_str()
                            .is_some_and(|ua| ua.starts_with("baresip"))
                })
                .cloned()
        },
    )
    .await
}

fn millis_between(from: &Value, to: &Value) -> i64 {
    let at = |v: &Value| {
        DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp"))
            .expect("RFC 3339")
            .timestamp_millis()
    };
    at(to) - at(from)
}

/// T13 (a call activity keeps who answered, answer and end times, outcome, duration),
/// T9 (the queue's first agent rings): a carrier's call reaches a real softphone
/// registered as the agent, it answers on its own, the carrier hangs up after [`HOLD`];
/// the call log shows the call answered by that agent on that phone, with the talk time
/// the carrier held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_a_call_answered_by_baresip_is_logged_with_its_duration() {
    let app = TestApp::spawn_for_sipp_with(|config| config.sip_digest = vec![Algorithm::Md5]).await;
    let line = line(&app, 20).await;
    let phone = Baresip::start(app.sip_addr(), "101", "pw-101-secret");
    let binding = baresip_binding(&app, &phone, "101").await;
    assert_eq!(binding["user"], json!(line.anna), "{binding}");
    assert_eq!(binding["transport"], "udp", "{binding}");

    // The call is relayed and recorded; the carrier plays SIPp's G.711 capture.
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
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    let hold_ms = HOLD.as_millis().to_string();
    let (ok, carrier) = carrier_call(&app, "carrier_call_hold_audio.xml", &["-d", &hold_ms])
        .finish()
        .await;
    assert!(
        ok,
        "the carrier's call is answered and hung up: {carrier}\nbaresip:\n{}",
        phone.log()
    );

    let call = ended_call(&app).await;
    let context = format!("{call}\nbaresip:\n{}", phone.log());
    assert_eq!(call["outcome"], "answered", "{context}");
    assert_eq!(call["answered_by"], json!(line.anna), "{context}");
    assert_eq!(call["direction"], "incoming", "{context}");
    let legs = call["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 1, "only Anna has a phone: {context}");
    assert_eq!(legs[0]["state"], "answered", "{context}");
    assert_eq!(legs[0]["status"], 200, "{context}");
    assert_eq!(
        legs[0]["target"], binding["contact"],
        "baresip's registered contact answered: {context}"
    );

    // T13: the talk time is the carrier's hold, from answer to hang-up.
    let talked_ms = millis_between(&call["answered_at"], &call["ended_at"]);
    let (low, high) = (HOLD - TOLERANCE, HOLD + TOLERANCE);
    assert!(
        (low.as_millis() as i64..=high.as_millis() as i64).contains(&talked_ms),
        "answered to ended is {talked_ms} ms, the carrier held {HOLD:?} (± {TOLERANCE:?}): {context}"
    );
    assert_eq!(
        call["duration_s"],
        json!(talked_ms / 1000),
        "duration_s is the talk time in whole seconds: {context}"
    );

    // The recording: as long as the talk, with the carrier's audio on the caller's channel.
    let call = wait_until(Duration::from_secs(15), "the recording", || async {
        let calls = app.get_ok("/api/v1/calls").await;
        let call = calls["items"].as_array()?.first()?.clone();
        call["recording"].is_string().then_some(call)
    })
    .await;
    let context = format!("{call}\nbaresip:\n{}", phone.log());
    let recorded_ms = call["recording_ms"].as_i64().unwrap();
    assert!(
        (recorded_ms - talked_ms).abs() < TOLERANCE.as_millis() as i64,
        "recorded {recorded_ms} ms of a {talked_ms} ms talk: {context}"
    );
    assert!(
        call["media"]["from_caller"]["packets"].as_u64().unwrap() > 50,
        "{context}"
    );
    // baresip's source (aubridge, nothing playing into it) is silent: it sends RTCP only,
    // and that went through the relay too.
    assert!(
        call["media"]["from_callee"]["relayed"].as_u64().unwrap() >= 1,
        "{context}"
    );
    let wav = app
        .client
        .get(format!(
            "{}{}",
            app.base,
            call["recording"].as_str().unwrap()
        ))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let caller_peak = samples
        .iter()
        .step_by(2)
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0);
    assert!(
        caller_peak > 1000,
        "the carrier's speech is on the caller's channel: {caller_peak}"
    );

    // The call's activity on the new lead is done (answered), not a "call back".
    let lead = &app.leads().await[0];
    assert_eq!(lead["responsible"], json!(line.anna), "{lead}");
    let timeline = app
        .get_ok(&format!(
            "/api/v1/activities?entity=lead:{}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    let activity = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == call["activity"])
        .unwrap_or_else(|| panic!("the call activity is on the lead: {timeline}"))
        .clone();
    assert_eq!(activity["completed"], true, "{activity}");
    assert_eq!(activity["responsible"], json!(line.anna), "{activity}");

    drop(phone);
    app.stop().await;
}
