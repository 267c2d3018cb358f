//! `TestApp`: the real application on port 0 with a fresh database, driven over HTTP.

use std::net::SocketAddr;

use leadline::{App, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The defaults, except that new calls are never refused for runtime lag: a debug build
/// sharing two cores with other test binaries lags past any bound now and then, and a
/// test must not depend on timing. `sip_overload` turns it on where it is the subject.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::for_data_dir(data_dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.sip_shed_lag = std::time::Duration::ZERO;
    config
}

pub struct TestApp {
    pub app: Option<App>,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    config: Config,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// A gateway on the embedded default (SQLite in a temp data dir).
    pub async fn spawn() -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(dir.path());
        Self::start(config, dir).await
    }

    /// A gateway whose registrar offers MD5 first: SIPp reads only the first challenge
    /// and answers MD5 only.
    pub async fn spawn_for_sipp() -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        config.sip_digest = vec![
            leadline::sip::digest::Algorithm::Md5,
            leadline::sip::digest::Algorithm::Sha256,
        ];
        config.sip_domain = "leadline.test".to_owned();
        Self::start(config, dir).await
    }

    /// A gateway on the embedded default with settings changed by `configure`, which also
    /// gets the temp data dir (for files such as SIP profiles).
    pub async fn spawn_with(configure: impl FnOnce(&mut Config, &std::path::Path)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        configure(&mut config, dir.path());
        Self::start(config, dir).await
    }

    /// [`TestApp::spawn_for_sipp`] with more settings changed; also where its data lives.
    pub async fn spawn_for_sipp_with(change: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        config.sip_digest = vec![
            leadline::sip::digest::Algorithm::Md5,
            leadline::sip::digest::Algorithm::Sha256,
        ];
        config.sip_domain = "leadline.test".to_owned();
        change(&mut config);
        Self::start(config, dir).await
    }

    /// The data directory (the embedded SQLite database is `leadline.db` in it).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.app.as_ref().expect("running").sip_addr
    }

    /// A gateway on the given database URL (PostgreSQL tests).
    pub async fn spawn_with_database(url: &str) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        config.database_url = url.to_owned();
        Self::start(config, dir).await
    }

    async fn start(config: Config, dir: tempfile::TempDir) -> TestApp {
        let app = App::start(config.clone()).await.expect("app starts");
        let admin = app
            .generated_admin_token
            .clone()
            .expect("a fresh database generates the admin token");
        TestApp {
            base: format!("http://{}", app.http_addr),
            admin,
            client: reqwest::Client::new(),
            app: Some(app),
            config,
            _dir: dir,
        }
    }

    /// Stops the gateway and starts it again on the same data (a restart of the process).
    pub async fn restart(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.expect("clean shutdown");
        }
        let app = App::start(self.config.clone()).await.expect("app restarts");
        self.base = format!("http://{}", app.http_addr);
        self.app = Some(app);
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.expect("clean shutdown");
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// POST as admin, asserting the status.
    pub async fn post_ok(&self, path: &str, body: Value, expect: StatusCode) -> Value {
        let (status, value) = self
            .request(reqwest::Method::POST, path, Some(&self.admin), Some(body))
            .await;
        assert_eq!(status, expect, "POST {path}: {value}");
        value
    }

    /// The Prometheus text of `/metrics`, if it answered.
    pub async fn metrics(&self) -> Option<String> {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Waits until `/metrics` shows exactly the line `line` (a gauge back to its value).
    pub async fn wait_for_metric_line(&self, line: &str, what: &str) {
        crate::common::wait_until(std::time::Duration::from_secs(10), what, || async {
            self.metrics()
                .await?
                .lines()
                .any(|l| l == line)
                .then_some(())
        })
        .await;
    }

    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, value) = self
            .request(reqwest::Method::GET, path, Some(&self.admin), None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {value}");
        value
    }

    pub async fn put_ok(&self, path: &str, body: Value) -> Value {
        let (status, value) = self
            .request(reqwest::Method::PUT, path, Some(&self.admin), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "PUT {path}: {value}");
        value
    }

    pub async fn create_user(
        &self,
        name: &str,
        email: &str,
        role: &str,
        extension: &str,
    ) -> String {
        let user = self
            .post_ok(
                "/api/v1/users",
                json!({"name": name, "email": email, "role": role, "extension": extension}),
                StatusCode::CREATED,
            )
            .await;
        user["id"].as_str().expect("user id").to_owned()
    }

    pub async fn token_for(&self, user: &str) -> String {
        let token = self
            .post_ok(
                &format!("/api/v1/users/{user}/tokens"),
                json!({}),
                StatusCode::CREATED,
            )
            .await;
        token["token"].as_str().expect("token").to_owned()
    }

    /// The walkthrough's set-up: two agents in a queue, a DE number on that queue.
    pub async fn sales_line(&self) -> SalesLine {
        let anna = self
            .create_user("Anna", "anna@example.com", "agent", "101")
            .await;
        let ben = self
            .create_user("Ben", "ben@example.com", "agent", "102")
            .await;
        let queue = self
            .post_ok(
                "/api/v1/queues",
                json!({"name": "Sales", "members": [anna, ben]}),
                StatusCode::CREATED,
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let number = self
            .post_ok(
                "/api/v1/numbers",
                json!({"number": "+4930901820", "default_country": "DE", "queue": queue}),
                StatusCode::CREATED,
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        SalesLine { anna, ben, number }
    }

    pub async fn ringing(&self, call_id: &str, from: &str) -> Value {
        self.post_ok(
            "/api/v1/calls/events",
            json!({"call_id": call_id, "event": "ringing", "direction": "incoming",
                   "from": from, "to": "+4930901820"}),
            StatusCode::OK,
        )
        .await
    }

    pub async fn leads(&self) -> Vec<Value> {
        self.get_ok("/api/v1/leads?limit=500").await["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}

pub struct SalesLine {
    pub anna: String,
    pub ben: String,
    pub number: String,
}
