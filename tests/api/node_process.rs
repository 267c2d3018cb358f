//! A gateway node as a process of its own (`leadline serve`, the real binary), for the
//! tests of several nodes on one database: they kill one with kill -9.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `leadline serve` process with its own data dir; killed on drop.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub(crate) http: String,
    token: String,
    _data: tempfile::TempDir,
}

impl NodeProcess {
    /// Starts a node with HTTP and SMTP on free ports, admin `token`, and `args` (the
    /// database, the SIP address, …); returns once it logged its HTTP address.
    pub(crate) async fn start(token: &str, args: &[&str]) -> NodeProcess {
        NodeProcess::start_in(token, args, tempfile::tempdir().unwrap()).await
    }

    /// [`NodeProcess::start`] on the data dir `data` (a restart on a killed node's).
    pub(crate) async fn start_in(
        token: &str,
        args: &[&str],
        data: tempfile::TempDir,
    ) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadline"))
            .args(["serve", "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .env("LEADLINE_ADMIN_TOKEN", token)
            .env("LEADLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start leadline");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let http = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("http_addr=").nth(1) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("leadline logs its HTTP address");
        // Drained so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        NodeProcess {
            child,
            http,
            token: token.to_owned(),
            _data: data,
        }
    }

    /// `GET /api/v1{path}` as the admin; `None` when the node does not answer (killed)
    /// or answers no JSON.
    pub(crate) async fn get(&self, path: &str) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("http://{}/api/v1{path}", self.http))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// `POST /api/v1{path}` as the admin, expecting `201 Created`.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("http://{}/api/v1{path}", self.http))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "POST {path}");
        response.json().await.unwrap()
    }

    /// Anna (extension 101) in the Sales queue behind `number`, reached from a carrier
    /// trunk recognised by its loopback address; Anna's user id.
    pub(crate) async fn sales_line(&self, number: &str) -> String {
        let anna = self
            .post(
                "/users",
                json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                       "extension": "101", "sip_password": "pw-101-secret"}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let queue = self
            .post("/queues", json!({"name": "Sales", "members": [anna]}))
            .await["id"]
            .clone();
        let trunk = self
            .post(
                "/trunks",
                json!({"name": "Carrier", "kind": "carrier", "host": "127.0.0.1",
                       "register": false, "allowed_ips": ["127.0.0.1"]}),
            )
            .await["id"]
            .clone();
        self.post(
            "/numbers",
            json!({"number": number, "default_country": "DE", "queue": queue, "trunk": trunk,
                   "ring_timeout_s": 20}),
        )
        .await;
        anna
    }

    /// kill -9, and waits until the process is gone.
    pub(crate) async fn kill(&mut self) {
        self.child.start_kill().expect("kill -9");
        self.child.wait().await.unwrap();
    }

    /// kill -9; the data dir it leaves, for a restart.
    pub(crate) async fn kill_keeping_data(mut self) -> tempfile::TempDir {
        self.kill().await;
        self._data
    }
}
