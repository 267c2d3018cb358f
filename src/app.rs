//! One running gateway process: database, HTTP server, graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::events::{EventBus, LiveCalls};
use crate::http::auth::{generate_token, hash_token};
use crate::http::{self, AppState};
use crate::sip::b2bua::{B2bua, Dialer};
use crate::sip::endpoint::SipEndpoint;
use crate::sip::profiles::Profiles;
use crate::sip::server::Registrar;
use crate::store::{Store, StoreError};
use rsipstack::dialog::dialog_layer::DialogLayer;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("TLS certificate: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Sip(#[from] crate::sip::endpoint::EndpointError),
    #[error("SIP profiles: {0}")]
    Profiles(#[from] crate::sip::profiles::ProfileError),
    #[error(transparent)]
    Smtp(#[from] crate::mail::smtp::Error),
    #[error(transparent)]
    Journal(#[from] crate::store::journal::JournalError),
}

/// A started gateway. Dropping it does not stop it: call `shutdown`.
pub struct App {
    pub http_addr: SocketAddr,
    /// The API and console over TLS (`https`), next to plain HTTP.
    pub https_addr: Option<SocketAddr>,
    /// SIP over UDP and TCP, both on this address.
    pub sip_addr: SocketAddr,
    /// SIP over TLS, when a certificate is configured.
    pub sip_tls_addr: Option<SocketAddr>,
    /// SMTP and LMTP of the forward/BCC address (E16).
    pub smtp_addr: SocketAddr,
    /// The admin token generated on first start (also printed once), if one was.
    pub generated_admin_token: Option<String>,
    pub store: Store,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), std::io::Error>>,
    https_server: Option<JoinHandle<Result<(), std::io::Error>>>,
    sip: SipEndpoint,
    sip_cancel: CancellationToken,
    /// Carrier registration and keep-alives: they un-register and stop on `sip_cancel`,
    /// before the endpoint they send through.
    sip_tasks: Vec<JoinHandle<()>>,
    /// SIP requests being handled: answered before the database closes.
    sip_requests: tokio_util::task::TaskTracker,
}

impl App {
    /// Opens (and migrates) the database, bootstraps the admin token, starts HTTP.
    pub async fn start(config: Config) -> Result<App, StartError> {
        let store = open_store(&config).await?;
        let generated_admin_token = bootstrap_admin_token(&store, &config).await?;

        let profiles = Arc::new(match &config.sip_profiles {
            Some(dir) => Profiles::load_dir(dir)?,
            None => Profiles::builtin(),
        });
        let calls_in_setup =
            crate::sip::admission::setup::CallsInSetup::new(config.max_calls_in_setup);
        let sip_cancel = CancellationToken::new();
        // One certificate for every TLS listener, following its files until shutdown.
        let tls_certificate = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::ReloadingCertificate::start(
                cert,
                key,
                sip_cancel.clone(),
            )?),
            _ => None,
        };
        let sip_tls = config
            .sip_tls
            .zip(tls_certificate.clone())
            .map(|(addr, certificate)| crate::sip::endpoint::TlsListen { addr, certificate });
        let (sip, incoming) = SipEndpoint::start(
            config.sip,
            config.sip_tcp_max_message,
            crate::sip::endpoint::EdgeShedding::new(calls_in_setup.clone(), config.sip_shed_lag),
            sip_tls,
            config.sip_tls_ca.as_deref(),
        )
        .await?;
        let sip_addr = sip.local;
        let sip_tls_addr = sip.tls_local;
        // Calls find trunks, numbers and devices in memory from the first INVITE on.
        store.load_snapshot().await?;
        let node = crate::cluster::NodeId::generate();
        let leases = crate::cluster::Leases::new(node.clone());
        let mut sip_tasks = start_sip_clients(
            &store,
            &sip,
            &profiles,
            &leases,
            config.sip_proxy,
            &sip_cancel,
        );
        sip_tasks.push(store.watch_changes(sip_cancel.clone()));
        // Calls' opening events are written ahead here, and their writes wait here while
        // PostgreSQL is down; what an earlier run left (killed with writes queued or the
        // database down) is replayed first, in the background (`/readyz`: degraded).
        store.attach_journal(crate::store::journal::Journal::open(
            &config.data_dir.join("journal"),
        )?);
        let replayed = store.clone();
        sip_tasks.push(tokio::spawn(crate::store::journal::run(
            store.clone(),
            sip_cancel.clone(),
            move |outcome| {
                let store = replayed.clone();
                async move { crate::webhooks::records::announce_replayed(&store, &outcome).await }
            },
        )));
        let events = match store.backend() {
            crate::store::Backend::Postgres => {
                let (events, outgoing) = EventBus::linked();
                sip_tasks.push(tokio::spawn(crate::cluster::events::run(
                    store.clone(),
                    node.clone(),
                    events.clone(),
                    outgoing,
                    sip_cancel.clone(),
                )));
                events
            }
            crate::store::Backend::Sqlite => EventBus::default(),
        };
        // Subscribed before anything can publish (the mail intake, from here on); stops
        // with the other background tasks, before the database closes.
        sip_tasks.push(tokio::spawn(crate::webhooks::delivery::run(
            store.clone(),
            node.clone(),
            events.subscribe_own(),
            config.webhooks.clone(),
            sip_cancel.clone(),
        )));
        let mail_changed = Arc::new(tokio::sync::Notify::new());
        let mail_credentials = crate::mail::Credentials::new(store.clone());
        // The IMAP pollers stop with the rest on shutdown.
        sip_tasks.push(tokio::spawn(crate::mail::poller::run(
            store.clone(),
            events.clone(),
            mail_credentials.clone(),
            mail_changed.clone(),
            leases.clone(),
            sip_cancel.clone(),
        )));

        let smtp_listener = crate::mail::smtp::bind(config.smtp).await?;
        let smtp_addr =
            smtp_listener
                .local_addr()
                .map_err(|source| crate::mail::smtp::Error::Bind {
                    addr: config.smtp,
                    source,
                })?;
        sip_tasks.push(
            start_forward_listener(&store, &events, &config, smtp_listener, sip_cancel.clone())
                .await?,
        );

        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.http,
                    source,
                })?;
        let http_addr = listener.local_addr().map_err(StartError::Serve)?;
        let https = bind_https(&config, tls_certificate.as_ref()).await?;
        // Listed among the nodes before it takes any lease; the pollers and carrier
        // registrations wait for their leases.
        let addresses = crate::cluster::nodes::Addresses {
            sip: sip_addr,
            http: http_addr,
        };
        crate::cluster::nodes::register(&store, &node, addresses).await?;
        sip_tasks.push(tokio::spawn(crate::cluster::leases::keep(
            store.clone(),
            leases,
            sip_cancel.clone(),
        )));
        sip_tasks.push(tokio::spawn(crate::cluster::nodes::heartbeat(
            store.clone(),
            node.clone(),
            addresses,
            sip_cancel.clone(),
        )));
        sip_tasks.push(tokio::spawn(crate::cluster::lost::sweep(
            store.clone(),
            node.clone(),
            sip_cancel.clone(),
        )));

        let media = Arc::new(crate::media::MediaEngine::new(
            crate::media::PortPool::new(config.rtp_ports, sip_addr.ip()),
            media_address(&config, sip_addr),
            config.media_timeout,
        ));
        sip_tasks.push(tokio::spawn(crate::store::privacy::keep_erasures_finished(
            store.clone(),
            config.data_dir.join(crate::sip::b2bua::RECORDINGS_DIR),
            sip_cancel.clone(),
        )));
        sip_tasks.push(tokio::spawn(crate::media::retention::run(
            store.clone(),
            config.data_dir.join(crate::sip::b2bua::RECORDINGS_DIR),
            config.recording_retention_days,
            sip_cancel.clone(),
        )));
        // Not awaited: sign-ins wait for it only if they come within its few milliseconds.
        drop(tokio::task::spawn_blocking(
            crate::session::password::warm_up,
        ));
        sip_tasks.push(tokio::spawn(crate::http::session::sweep(
            store.clone(),
            sip_cancel.clone(),
        )));
        sip_tasks.push(tokio::spawn(crate::http::audit::retention(
            store.clone(),
            config.audit_retention_days,
            sip_cancel.clone(),
        )));
        let live = LiveCalls::default();
        let desk = crate::sip::queueing::Desk::start(
            store.clone(),
            store
                .presences()
                .await
                .map_err(StartError::Store)?
                .into_iter()
                .map(|p| (p.user, p.status, p.max_calls)),
            config.data_dir.clone(),
            sip_cancel.clone(),
        );
        let (shutdown, mut signal) = watch::channel(false);
        let mut registrar = Registrar::new(
            store.clone(),
            config.sip_domain.clone(),
            config.sip_digest.clone(),
        );
        registrar.nonce_key = shared_nonce_key(&store).await?;
        // The sent-by our outgoing Via headers carry: the bound address.
        registrar.own_addresses = vec![sip_addr];
        registrar.sip_proxy = config.sip_proxy;
        registrar.max_in_flight_per_source = config.sip_max_transactions_per_source;
        registrar.calls_in_setup = calls_in_setup;
        registrar.profiles = profiles.clone();
        registrar.register_slots = Arc::new(tokio::sync::Semaphore::new(
            config.max_registers_in_progress,
        ));
        let b2bua = Arc::new(B2bua {
            store: store.clone(),
            dialogs: Arc::new(DialogLayer::new(sip.inner.clone())),
            profiles: profiles.clone(),
            local: sip_addr,
            lookup_budget: config.call_lookup_budget,
            events: events.clone(),
            live: live.clone(),
            desk: desk.clone(),
            node: node.clone(),
            endpoint: sip.handle(),
            own_dialogs: Default::default(),
            calls: crate::sip::b2bua::registry::Registry::spawn(),
            media: Some(media.clone()),
            data_dir: config.data_dir.clone(),
            sip_proxy: config.sip_proxy,
            api_base: config.public_url.clone().unwrap_or_else(|| {
                crate::config::default_public_url(
                    http_addr,
                    https.as_ref().map(|(_, addr, _)| *addr),
                    rustix::system::uname().nodename().to_str().ok(),
                )
            }),
        });
        registrar.b2bua = Some(b2bua.clone());
        let registrar = Arc::new(registrar);
        let sip_requests = tokio_util::task::TaskTracker::new();
        tokio::spawn(crate::sip::server::serve(
            registrar,
            incoming,
            sip_cancel.clone(),
            sip_requests.clone(),
        ));

        let state = AppState {
            store: store.clone(),
            env_admin_token_hash: config.admin_token.as_deref().map(hash_token),
            metrics: Some(metrics_handle()),
            sip_realm: Arc::from(config.sip_domain.as_str()),
            profiles,
            events,
            live,
            desk,
            node,
            stopping: signal.clone(),
            mail_changed: mail_changed.clone(),
            mail_credentials,
            mail_domain: Arc::from(config.mail_domain.as_str()),
            webhook_private_targets: config.webhooks.private_targets,
            access_changed: Arc::new(tokio::sync::watch::channel(0).0),
            data_dir: Arc::from(config.data_dir.as_path()),
            dialer: Some(Dialer::new(b2bua)),
            login_throttle: Arc::default(),
            passwords: http::session::Passwords::default(),
        };
        let router = http::router(state);
        let mut https_addr = None;
        let https_server = https.map(|(listener, addr, tls)| {
            https_addr = Some(addr);
            tracing::info!(https_addr = %addr, "serving HTTPS");
            tokio::spawn(http::https::serve(
                listener,
                tls,
                router.clone(),
                signal.clone(),
            ))
        });
        let server = tokio::spawn(async move {
            // The peer address is what the audit log records as `remote_addr`.
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
        });
        tracing::info!(%http_addr, %sip_addr, %smtp_addr, database = %redact(&config.database_url), "leadline started");
        Ok(App {
            http_addr,
            https_addr,
            sip_addr,
            sip_tls_addr,
            smtp_addr,
            sip,
            sip_cancel,
            sip_tasks,
            sip_requests,
            generated_admin_token,
            store,
            shutdown,
            server,
            https_server,
        })
    }

    /// Stops accepting, lets in-flight requests finish, closes the database.
    pub async fn shutdown(self) -> Result<(), StartError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Runs until the server stops (after `shutdown` or on a fatal error).
    pub async fn wait(self) -> Result<(), StartError> {
        let mut result = match self.server.await {
            Ok(result) => result.map_err(StartError::Serve),
            Err(join) => Err(StartError::Serve(std::io::Error::other(join))),
        };
        if let Some(https) = self.https_server {
            // The plain listener stops only on shutdown, which stops this one too.
            let _ = self.shutdown.send(true);
            let https = match https.await {
                Ok(outcome) => outcome.map_err(StartError::Serve),
                Err(join) => Err(StartError::Serve(std::io::Error::other(join))),
            };
            result = result.and(https);
        }
        self.sip_cancel.cancel();
        for task in self.sip_tasks {
            let _ = task.await;
        }
        self.sip_requests.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.sip_requests.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.sip_requests.len(),
                "SIP requests still in progress at shutdown"
            );
        }
        self.sip.shutdown().await;
        self.store.close().await;
        result
    }

    /// A handle that asks the app to stop; usable after `wait` took the app.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The HTTPS listener when `https` is set: bound now (a taken port fails start-up), serving
/// the process's one certificate (read at start-up, followed afterwards).
async fn bind_https(
    config: &Config,
    certificate: Option<&Arc<crate::tls::ReloadingCertificate>>,
) -> Result<Option<(TcpListener, SocketAddr, Arc<rustls::ServerConfig>)>, StartError> {
    let (Some(addr), Some(certificate)) = (config.https, certificate) else {
        return Ok(None);
    };
    let tls = crate::tls::server_config(certificate.clone(), &[b"h2", b"http/1.1"]);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(StartError::Serve)?;
    Ok(Some((listener, local, tls)))
}

/// The digest nonce key of every node on this database, made by the first to start: a
/// phone challenged by one node may answer to another (and, alone, across restarts).
async fn shared_nonce_key(store: &Store) -> Result<crate::sip::digest::NonceKey, StartError> {
    use crate::sip::digest::NonceKey;
    let stored = store
        .shared_secret("digest_nonce_key", &NonceKey::generate().to_hex())
        .await?;
    Ok(NonceKey::from_hex(&stored).unwrap_or_else(|| {
        tracing::warn!(
            "the stored digest nonce key is not 64 hex digits; using one of this process"
        );
        NonceKey::generate()
    }))
}

/// How long shutdown waits for SIP requests in progress (a registration, a call's
/// routing) to be answered before the database closes.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The parts of the gateway that send SIP requests of their own: outbound registration
/// to carrier trunks (T2) and NAT keep-alives for UDP bindings.
fn start_sip_clients(
    store: &Store,
    sip: &SipEndpoint,
    profiles: &Arc<Profiles>,
    leases: &crate::cluster::Leases,
    proxy: Option<SocketAddr>,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let client = crate::sip::client::SipClient::new(sip.handle()).through(proxy);
    vec![
        tokio::spawn(crate::sip::trunk::task::run(
            store.clone(),
            client.clone(),
            profiles.clone(),
            leases.clone(),
            cancel.clone(),
        )),
        tokio::spawn(crate::sip::keepalive::task::run(
            store.clone(),
            client,
            profiles.clone(),
            // One node pings the shared bindings; the embedded single node needs no lease.
            (store.backend() == crate::store::Backend::Postgres).then(|| leases.clone()),
            cancel.clone(),
        )),
    ]
}

/// E16: the SMTP/LMTP listener of the account's forward address; each message goes
/// through the same intake as collected mail before it is acknowledged.
async fn start_forward_listener(
    store: &Store,
    events: &EventBus,
    config: &Config,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    use crate::mail::smtp;
    let address = store.forward_address(&config.mail_domain).await?;
    let recipients = smtp::ForwardAddress::parse(&address)?;
    let settings = smtp::Settings::new(config.mail_domain.clone(), config.mail_max_message);
    let (store, events) = (store.clone(), events.clone());
    let handler = move |delivery: smtp::Delivery| {
        let (store, events) = (store.clone(), events.clone());
        let address = address.clone();
        async move {
            crate::mail::take_forwarded(&store, &events, delivery.raw, &address)
                .await
                .map(|outcome| {
                    tracing::info!(action = %outcome.action, "forwarded message taken in");
                })
        }
    };
    Ok(tokio::spawn(smtp::serve(
        listener, settings, recipients, handler, cancel,
    )))
}

/// Connects and migrates; creates the data directory for the embedded default.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    if config.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    }
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
}

/// API.md: with `LEADLINE_ADMIN_TOKEN` unset on the first start, generate one, store its
/// hash and print it once.
async fn bootstrap_admin_token(
    store: &Store,
    config: &Config,
) -> Result<Option<String>, StartError> {
    if config.admin_token.is_some() || store.has_bootstrap_token().await? {
        return Ok(None);
    }
    let token = generate_token();
    store
        .create_token(&hash_token(&token), "admin", None, None, "bootstrap")
        .await?;
    // Printed, not only logged: the operator needs it even with logging turned down.
    eprintln!(
        "\n  Leadline admin token (shown once, store it now):\n\n    {token}\n\n  \
         Set LEADLINE_ADMIN_TOKEN to use your own instead.\n"
    );
    tracing::warn!("generated the bootstrap admin token (printed above, stored hashed)");
    Ok(Some(token))
}

/// The process-wide Prometheus recorder (installed once even if several apps run in one
/// process, as in tests).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The address parties send media to: the configured one, else the SIP address, else
/// (SIP on all interfaces) the address of the interface a packet to the outside world
/// would leave from, found by connecting a UDP socket (nothing is sent).
fn media_address(config: &Config, sip: SocketAddr) -> std::net::IpAddr {
    if let Some(ip) = config.media_address {
        return ip;
    }
    if !sip.ip().is_unspecified() {
        return sip.ip();
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("192.0.2.1:9")?;
            socket.local_addr()
        })
        .map(|addr| addr.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_password_is_not_logged() {
        assert_eq!(
            super::redact("postgres://ll:secret@db:5432/crm"),
            "postgres://ll:***@db:5432/crm"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
