//! Getting from a host name to a logged-in `async_imap::Session`: TCP, TLS (implicit or
//! STARTTLS, RFC 3501 6.2.1 / RFC 8314), the greeting, LOGIN. Every step runs under a
//! deadline and every failure is one of the three errors the `test` endpoint reports
//! (`connect_failed`, `tls_failed`, `login_failed`); nothing here runs after login.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use async_imap::imap_proto::{Capability, Response, ResponseCode, Status};
use async_imap::{Client, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use super::{Capabilities, ImapError, ImapSettings, Security, truncate};

/// The byte stream under the IMAP session: one type for plain and TLS connections, so
/// `ImapSession` is not generic.
#[derive(Debug)]
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub(super) type ImapClient = Client<Transport>;
pub(super) type ImapConn = Session<Transport>;

/// Connects, secures and logs in. Returns the session and what the server can do.
pub(super) async fn open(settings: &ImapSettings) -> Result<(ImapConn, Capabilities), ImapError> {
    let server = format!("{}:{}", settings.host, settings.port);
    let connect_deadline = Instant::now() + settings.timeouts.connect;
    let connect_failed = |reason: String| ImapError::ConnectFailed {
        server: server.clone(),
        reason,
    };
    let tls_failed = |reason: String| ImapError::TlsFailed {
        server: server.clone(),
        reason,
    };
    let late = |step: &str| format!("{step} within {:?}", settings.timeouts.connect);

    let tcp = match timeout_at(
        connect_deadline,
        TcpStream::connect((settings.host.as_str(), settings.port)),
    )
    .await
    {
        Err(_) => return Err(connect_failed(late("no TCP connection"))),
        Ok(Err(e)) => return Err(connect_failed(e.to_string())),
        Ok(Ok(tcp)) => tcp,
    };
    // IMAP is request/response with small commands: Nagle only adds latency.
    tcp.set_nodelay(true).ok();

    let (client, greeting_caps) = match settings.security {
        Security::Tls => {
            let tls = timeout_at(connect_deadline, handshake(settings, tcp))
                .await
                .map_err(|_| tls_failed(late("no TLS handshake")))?
                .map_err(tls_failed)?;
            let mut client = Client::new(Transport::Tls(Box::new(tls)));
            let caps = timeout_at(connect_deadline, read_greeting(&mut client))
                .await
                .map_err(|_| connect_failed(late("no IMAP greeting")))?
                .map_err(connect_failed)?;
            (client, caps)
        }
        Security::StartTls => {
            let mut client = Client::new(Transport::Plain(tcp));
            let caps = timeout_at(connect_deadline, read_greeting(&mut client))
                .await
                .map_err(|_| connect_failed(late("no IMAP greeting")))?
                .map_err(connect_failed)?;
            if let Some(caps) = &caps
                && !caps.has("STARTTLS")
            {
                return Err(tls_failed(
                    "the server does not offer STARTTLS: use security \"tls\" (port 993) \
                     or \"none\""
                        .to_owned(),
                ));
            }
            // RFC 3501 6.2.1: after the tagged OK the next bytes are the TLS handshake;
            // anything the server sent before it is discarded with the plain client.
            timeout_at(
                connect_deadline,
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await
            .map_err(|_| tls_failed(late("no answer to STARTTLS")))?
            .map_err(|e| tls_failed(format!("STARTTLS refused: {}", truncate(&e.to_string()))))?;
            let Transport::Plain(tcp) = client.into_inner() else {
                unreachable!("a STARTTLS client starts on a plain stream");
            };
            let tls = timeout_at(connect_deadline, handshake(settings, tcp))
                .await
                .map_err(|_| tls_failed(late("no TLS handshake")))?
                .map_err(tls_failed)?;
            // The capabilities before STARTTLS are void (RFC 3501 6.2.1): ask again after
            // login.
            (Client::new(Transport::Tls(Box::new(tls))), None)
        }
        Security::None => {
            let mut client = Client::new(Transport::Plain(tcp));
            let caps = timeout_at(connect_deadline, read_greeting(&mut client))
                .await
                .map_err(|_| connect_failed(late("no IMAP greeting")))?
                .map_err(connect_failed)?;
            (client, caps)
        }
    };

    login(settings, client, greeting_caps).await
}

async fn login(
    settings: &ImapSettings,
    client: ImapClient,
    greeting_caps: Option<Capabilities>,
) -> Result<(ImapConn, Capabilities), ImapError> {
    let login_failed = |reason: String| ImapError::LoginFailed {
        username: settings.username.clone(),
        reason,
    };
    if let Some(token) = &settings.bearer {
        let session = super::sasl::authenticate(settings, client, greeting_caps, token).await?;
        return with_capabilities(settings, session, None).await;
    }
    if let Some(caps) = &greeting_caps
        && caps.has("LOGINDISABLED")
    {
        // RFC 3501 6.2.3: the server refuses LOGIN on this connection, so do not send the
        // password in the clear just to hear it.
        return Err(login_failed(
            "the server refuses LOGIN on an unencrypted connection (LOGINDISABLED): use \
             security \"tls\" or \"starttls\""
                .to_owned(),
        ));
    }
    let attempt = client.login_with_capabilities(&settings.username, &settings.password);
    let (session, login_caps) = match tokio::time::timeout(settings.timeouts.login, attempt).await {
        Err(_) => {
            return Err(login_failed(format!(
                "no answer to LOGIN within {:?}",
                settings.timeouts.login
            )));
        }
        Ok(Err((e, _client))) => return Err(login_failed(describe_login_error(e))),
        Ok(Ok(ok)) => ok,
    };
    with_capabilities(settings, session, login_caps).await
}

/// The session with what the server can do after login: from the login's answer, else
/// asked.
async fn with_capabilities(
    settings: &ImapSettings,
    mut session: ImapConn,
    login_caps: Option<async_imap::types::Capabilities>,
) -> Result<(ImapConn, Capabilities), ImapError> {
    let login_failed = |reason: String| ImapError::LoginFailed {
        username: settings.username.clone(),
        reason,
    };
    let caps = match login_caps {
        Some(caps) => Capabilities::from_names(caps.iter().map(session_capability_name)),
        None => {
            // The server did not volunteer them in the LOGIN answer; RFC 3501 6.1.1.
            let asked = tokio::time::timeout(settings.timeouts.login, session.capabilities())
                .await
                .map_err(|_| {
                    login_failed(format!(
                        "no answer to CAPABILITY after login within {:?}",
                        settings.timeouts.login
                    ))
                })?
                .map_err(|e| login_failed(format!("CAPABILITY after login: {e}")))?;
            Capabilities::from_names(asked.iter().map(session_capability_name))
        }
    };
    Ok((session, caps))
}

pub(super) fn describe_login_error(e: async_imap::error::Error) -> String {
    use async_imap::error::Error;
    match e {
        Error::No(text) | Error::Bad(text) => truncate(&text),
        Error::Validate(invalid) => format!(
            "the username or password contains {:?}, which IMAP LOGIN cannot send",
            invalid.0
        ),
        Error::ConnectionLost => "the server closed the connection during LOGIN".to_owned(),
        other => truncate(&other.to_string()),
    }
}

/// Reads the server greeting (RFC 3501 7.1): `* OK` (maybe with capabilities) or `* BYE`.
async fn read_greeting(client: &mut ImapClient) -> Result<Option<Capabilities>, String> {
    let response = match client.read_response().await {
        Ok(Some(response)) => response,
        Ok(None) => return Err("the server closed the connection before its greeting".into()),
        Err(e) => return Err(format!("no IMAP greeting: {}", truncate(&e.to_string()))),
    };
    match response.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            outcome,
        } => Ok(match &outcome.code {
            Some(ResponseCode::Capabilities(caps)) => {
                Some(Capabilities::from_names(caps.iter().map(capability_name)))
            }
            _ => None,
        }),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Err(format!(
            "the server refused the connection: {}",
            truncate(outcome.information.as_deref().unwrap_or("BYE"))
        )),
        other => Err(format!(
            "not an IMAP greeting: {}",
            truncate(&format!("{other:?}"))
        )),
    }
}

fn session_capability_name(cap: &async_imap::types::Capability) -> String {
    use async_imap::types::Capability;
    match cap {
        Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
        Capability::Auth(mech) => format!("AUTH={}", mech.to_ascii_uppercase()),
        Capability::Atom(atom) => atom.to_ascii_uppercase(),
    }
}

pub(super) fn capability_name(cap: &Capability<'_>) -> String {
    match cap {
        Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
        Capability::Auth(mech) => format!("AUTH={}", mech.to_ascii_uppercase()),
        Capability::Atom(atom) => atom.to_ascii_uppercase(),
    }
}

async fn handshake(
    settings: &ImapSettings,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let config = tls_config(settings)?;
    let name = ServerName::try_from(settings.host.clone())
        .map_err(|e| format!("{:?} is not a valid TLS server name: {e}", settings.host))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| describe_tls_error(&e))
}

fn describe_tls_error(e: &io::Error) -> String {
    let text = e.to_string();
    if text.contains("corrupt message") || text.contains("InvalidContentType") {
        // What a plain-text greeting looks like to a TLS client.
        format!("{text} (is this a plain IMAP port? 143 usually wants \"starttls\")")
    } else {
        text
    }
}

/// The roots we trust: Mozilla's (webpki-roots, so the result does not depend on the
/// host's CA bundle) plus the mailbox's extra roots (a company CA, a test certificate).
fn tls_config(settings: &ImapSettings) -> Result<Arc<ClientConfig>, String> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if settings.extra_roots.is_empty() {
        if let Some(config) = DEFAULT.get() {
            return Ok(config.clone());
        }
        let config = build_tls_config(webpki_roots())?;
        return Ok(DEFAULT.get_or_init(|| config).clone());
    }
    let mut roots = webpki_roots();
    for cert in &settings.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("an extra root certificate is not usable: {e}"))?;
    }
    build_tls_config(roots)
}

fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn build_tls_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    // Name the provider instead of relying on a process default: exactly one (ring) is
    // compiled in, and `ClientConfig::builder()` panics when it cannot pick one.
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl fmt::Debug for ImapSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A4: the password never reaches a log line.
        f.debug_struct("ImapSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("extra_roots", &self.extra_roots.len())
            .field("timeouts", &self.timeouts)
            .field("limits", &self.limits)
            .field("resync", &self.resync)
            .finish()
    }
}
