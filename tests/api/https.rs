//! HTTPS of the real binary (`leadline serve --https`): the API over TLS next to plain
//! HTTP, the client's address and the `Secure` cookie as on a proxy's HTTPS, certificate
//! files replaced while it runs, and a plain-HTTP client on the HTTPS port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::common::wait_until;

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "https-admin-token-0123456789";
/// The name the test certificates are for; the clients resolve it to loopback.
const HOST: &str = "leadline.test";

/// A test CA and the server certificates it signs.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Leadline test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for [`HOST`] with its own key, serial and common name: (cert, key) PEM
    /// and the certificate's DER.
    fn server(&self, name: &str, serial: u64) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

/// Writes a file the way a renewal tool should: whole, then renamed into place.
fn replace_file(path: &Path, contents: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// `leadline serve` with HTTP and HTTPS on free loopback ports; killed on drop.
struct Gateway {
    child: Child,
    http: String,
    https: std::net::SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(cert_pem: &str, key_pem: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadline"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
            .args(["--sip", "127.0.0.1:0", "--smtp", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_remove("LEADLINE_DATABASE_URL")
            .env_remove("LEADLINE_CONFIG")
            .env("LEADLINE_ADMIN_TOKEN", TOKEN)
            .env("LEADLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start leadline");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let (https, http) = tokio::time::timeout(DEADLINE, async {
            let mut https = None;
            while let Ok(Some(line)) = lines.next_line().await {
                let field = |name: &str| {
                    line.split(name)
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .map(str::to_owned)
                };
                if let Some(addr) = field("https_addr=") {
                    https = Some(addr);
                }
                if let Some(addr) = field(" http_addr=") {
                    return https.map(|https| (https, addr));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("leadline logs its HTTPS and HTTP addresses");
        // Drained so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            child,
            http,
            https: https.parse().expect("HTTPS address"),
            cert,
            key,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.https.port())
    }

    /// A client that trusts `ca` and finds [`HOST`] on loopback.
    fn client(&self, ca: &TestCa) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .resolve(HOST, self.https)
            .build()
            .unwrap()
    }

    /// A new TLS connection to the HTTPS port, offering HTTP/2 and HTTP/1.1 by ALPN.
    async fn connect(
        &self,
        ca: &TestCa,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.issuer.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.https)
            .await
            .map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())
    }

    /// The certificate the HTTPS port shows to a new connection now, and the protocol it
    /// agreed on by ALPN.
    async fn served_certificate(
        &self,
        ca: &TestCa,
    ) -> Result<(CertificateDer<'static>, Vec<u8>), String> {
        let tls = self.connect(ca).await?;
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or("no peer certificate")?
            .clone()
            .into_owned();
        Ok((leaf, session.alpn_protocol().unwrap_or_default().to_vec()))
    }
}

async fn send(
    client: &reqwest::Client,
    request: reqwest::RequestBuilder,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = client
        .execute(request.build().unwrap())
        .await
        .expect("HTTPS request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_next_to_plain_http_and_outlasts_a_plain_http_client() {
    let ca = TestCa::new();
    let (cert, key, _) = ca.server("first", 1);
    let gateway = Gateway::start(&cert, &key).await;
    let client = gateway.client(&ca);

    let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (status, _, body) = send(&client, client.get(gateway.url("/api/v1/users"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, anna) = send(
        &client,
        client
            .post(gateway.url("/api/v1/users"))
            .bearer_auth(TOKEN)
            .json(
                &json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                          "password": "anna-console-1"}),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{anna}");

    // The audit log knows the client's address, as on plain HTTP.
    let (status, _, log) = send(
        &client,
        client.get(gateway.url("/api/v1/audit")).bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let created = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "POST /api/v1/users")
        .unwrap_or_else(|| panic!("the user's creation is logged: {log}"));
    assert!(
        created["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{created}"
    );

    // Plain HTTP on the HTTPS port gets no answer, and the listener goes on serving.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/readyz", gateway.https))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let plain_port = reqwest::get(format!("http://{}/readyz", gateway.http))
        .await
        .unwrap();
    assert_eq!(
        plain_port.status(),
        StatusCode::OK,
        "plain HTTP still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_signing_in_over_https_sets_a_secure_cookie_and_checks_the_https_origin() {
    let ca = TestCa::new();
    let (cert, key, _) = ca.server("first", 1);
    let gateway = Gateway::start(&cert, &key).await;
    let client = gateway.client(&ca);
    let (status, _, anna) = send(
        &client,
        client
            .post(gateway.url("/api/v1/users"))
            .bearer_auth(TOKEN)
            .json(
                &json!({"name": "Anna", "email": "anna@example.com", "role": "agent",
                          "password": "anna-console-1"}),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{anna}");

    let origin = format!("https://{HOST}:{}", gateway.https.port());
    let (status, headers, body) = send(
        &client,
        client
            .post(gateway.url("/api/v1/session"))
            .header("origin", &origin)
            .json(&json!({"email": "anna@example.com", "password": "anna-console-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // Over HTTP/2, as browsers connect: the host comes in `:authority`, not `Host`.
    let tls = gateway.connect(&ca).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let body = json!({"email": "anna@example.com", "password": "anna-console-1"}).to_string();
    let request = http::Request::post(gateway.url("/api/v1/session"))
        .header("origin", &origin)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_replaced_certificate_files_are_served_without_a_restart() {
    let ca = TestCa::new();
    let (cert, key, first) = ca.server("first", 1);
    let mut gateway = Gateway::start(&cert, &key).await;
    let (served, alpn) = gateway.served_certificate(&ca).await.unwrap();
    assert_eq!(served, first);
    assert_eq!(alpn, b"h2", "HTTP/2 offered by ALPN");

    let (cert, key, second) = ca.server("second", 2);
    assert_ne!(first, second);
    // The key first, as a renewal tool may: the half-renewed pair is refused and kept out.
    replace_file(&gateway.key, &key);
    replace_file(&gateway.cert, &cert);
    wait_until(DEADLINE, "the second certificate served", || async {
        match gateway.served_certificate(&ca).await {
            Ok((served, _)) if served == second => Ok(()),
            Ok(_) => Err("still the first certificate".to_owned()),
            Err(err) => Err(err),
        }
    })
    .await;
    let ready = gateway
        .client(&ca)
        .get(gateway.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "the same process serves on"
    );
}
