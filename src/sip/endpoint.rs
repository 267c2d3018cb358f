//! The SIP transport edge: UDP and TCP listeners on one port (and a TLS listener, RFC 3261
//! §26, when a certificate is configured) that read raw bytes, refuse
//! what `message` refuses (answering 4xx/5xx themselves), and hand the rest to
//! rsipstack's transaction layer (RFC 3261 §17: retransmissions, absorption, ACK for
//! non-2xx, CANCEL matching).
//!
//! Why our own receive loops: rsipstack's listeners parse with its lenient parser, drop
//! what it cannot parse without an answer, and log every datagram in full at INFO. We keep
//! its transaction layer and timers (`EndpointInner::on_received_message`,
//! `process_timer`) and never start its listeners, so these loops are the only readers of
//! the sockets. Everything above this module talks to `Transaction`s only, so the stack
//! stays replaceable.
//!
//! Every message the transaction layer sends passes [`SentMessages`], which tells the
//! bound on calls in set-up when a caller has its final answer.
//!
//! New calls are refused here, before the transaction layer, while the gateway is behind
//! ([`EdgeShedding`], the rule in `admission::shed`): everything behind these loops queues
//! without bound.
//!
//! TLS connections are accepted here too (tokio-rustls with the certificate of
//! `crate::tls`) and wrapped in rsipstack's `TlsConnection`, whose reader frames the
//! stream; its messages pass the same From-tag check and shedding before the transaction
//! layer. Phones registered over TLS are reached over their connection, as over TCP.
//! Carriers are the one peer we open TLS connections to ([`EndpointHandle::tls_flow`]):
//! their certificate is verified for the trunk's host against the public roots and the
//! configured CA, and the connection is then read and reused like an accepted one.
//!
//! A request without a From tag (RFC 2543 style) cannot enter rsipstack, which keys every
//! transaction by it and drops such requests in silence; it is answered here with a 400
//! that names the fault ([`untagged_refusal`]), never left unanswered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rsipstack::EndpointBuilder;
use rsipstack::sip::SipMessage;
use rsipstack::sip::{Header, Method, StatusCode, Transport};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::endpoint::{EndpointInner, MessageInspector};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::stream::StreamConnection as _;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use super::admission::setup::CallsInSetup;
use super::admission::shed::{LagGauge, Overload, PROBE_PERIOD};
use super::message::{Frame, Limits, Rejection, frame, parse_message, rejection_response};

/// Methods we answer; sent in `Allow` (501 for the rest).
pub const ALLOW: &[&str] = &["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER"];

/// A TLS handshake not done within this is abandoned (a stalled client holds no task).
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// A TCP connection with no traffic this long is closed; registered clients keep theirs
/// open with CRLF pings (RFC 5626 §4.4.1).
const TCP_IDLE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen for SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SIP stack: {0}")]
    Stack(#[from] rsipstack::Error),
    #[error("cannot open a SIP TCP connection to {peer}: {source}")]
    Connect {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("no TLS connection from {peer} is open (it must register again)")]
    NoTlsFlow { peer: SocketAddr },
    /// The TLS handshake with a carrier failed: its certificate did not verify for the
    /// trunk's host (self-signed, another name, expired) or it speaks no TLS.
    #[error("tls: {reason}")]
    TlsHandshake { peer: SocketAddr, reason: String },
    #[error(transparent)]
    CarrierTls(#[from] CarrierTlsError),
}

/// Why the settings for TLS connections to carriers cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CarrierTlsError {
    #[error("sip_tls_ca: {path}: {reason}")]
    Ca {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("TLS client settings: {0}")]
    Client(String),
}

/// What we trust when we connect to a carrier over TLS: the public roots, plus the
/// certificates of `ca` (a PEM bundle) for carriers with a private CA. Only the ring
/// provider, as everywhere in the process; no client certificate.
pub fn carrier_tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, CarrierTlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca {
        let failed = |reason: String| CarrierTlsError::Ca {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|err| failed(err.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| failed(format!("not a PEM bundle: {err}")))?;
        if certs.is_empty() {
            return Err(failed(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| failed(format!("not a CA certificate: {err}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| CarrierTlsError::Client(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The host name a carrier's certificate must carry, as rustls wants it (an IP literal,
/// bracketed or not, is checked against the certificate's IP addresses).
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|err| format!("'{host}': {err}"))
}

/// Open TCP and TLS connections by transport and peer address, so requests to a client
/// registered over TCP or TLS reuse its connection (RFC 3261 §18.2.2; behind NAT it is the
/// only way in). Kept here, not in rsipstack's transport layer: adding a stream there
/// starts its own reader.
pub type Connections = Arc<std::sync::Mutex<HashMap<(Transport, SocketAddr), TcpFlow>>>;

/// One open TCP or TLS connection, accepted or opened by us, read by
/// `tcp_connection_loop` or `tls_connection_loop`; `connection` tells which.
#[derive(Clone)]
pub struct TcpFlow {
    pub connection: SipConnection,
    /// Cancelled when the connection is closed (by either side, or idle): a registration
    /// made over it must then be made again (RFC 5626 §4.4.1: the flow is gone).
    pub closed: CancellationToken,
    /// Tells two flows to the same peer apart (a newer one replaces the older in the map).
    id: u64,
}

/// Sending side of the endpoint, for the parts of the gateway that send requests of their
/// own (carrier REGISTER, keep-alive OPTIONS): cheap to clone.
#[derive(Clone)]
pub struct EndpointHandle {
    pub inner: Arc<EndpointInner>,
    /// UDP and TCP are bound to this same address.
    pub local: SocketAddr,
    /// The TLS listener's address, when there is one: our address in Via and Contact of
    /// requests sent over TLS.
    pub tls_local: Option<SocketAddr>,
    tcp_limits: Limits,
    connections: Connections,
    carriers: CarrierTls,
    edge: EdgeShedding,
    cancel: CancellationToken,
}

/// How we connect to carriers over TLS: the trust settings, and the host name each
/// carrier address was reached under, so a lost connection can be opened again with the
/// same check.
#[derive(Clone)]
struct CarrierTls {
    connector: TlsConnector,
    names: Arc<std::sync::Mutex<HashMap<SocketAddr, String>>>,
}

impl EndpointHandle {
    /// A TLS connection to the carrier at `peer`: the open one if there is one, else a
    /// new one whose certificate must verify for `host` (the trunk's host). It is read
    /// like an accepted connection, so the carrier's requests on it reach us too.
    pub async fn tls_flow(
        &self,
        peer: SocketAddr,
        host: &str,
        connect_timeout: Duration,
    ) -> Result<TcpFlow, EndpointError> {
        if let Some(flow) = self.open_flow(Transport::Tls, peer) {
            return Ok(flow);
        }
        let refused = |reason: String| EndpointError::TlsHandshake { peer, reason };
        let name = server_name(host).map_err(refused)?;
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(peer)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(EndpointError::Connect { peer, source }),
            Err(_) => {
                return Err(EndpointError::Connect {
                    peer,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {connect_timeout:?}"),
                    ),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let handshake = self.carriers.connector.connect(name, stream);
        let stream = match tokio::time::timeout(TLS_HANDSHAKE, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                metrics::counter!("leadline_sip_tls_handshake_failed_total").increment(1);
                tracing::warn!(%peer, host, %err, "TLS connection to the carrier refused");
                return Err(refused(err.to_string()));
            }
            Err(_) => return Err(refused(format!("no handshake within {TLS_HANDSHAKE:?}"))),
        };
        let conn = TlsConnection::from_client_stream(
            stream,
            tls_addr(peer),
            Some(self.cancel.child_token()),
        )
        .await
        .map_err(|err| refused(err.to_string()))?;
        self.carriers
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, host.to_owned());
        Ok(start_tls_flow(
            self.inner.clone(),
            conn,
            self.edge.clone(),
            peer,
            self.connections.clone(),
            &self.cancel,
        ))
    }

    /// A TCP connection to `peer`: the open one if there is one (whoever opened it), else
    /// a new one, read by the same loop as accepted connections so responses and requests
    /// arriving on it reach the transaction layer.
    pub async fn tcp_flow(
        &self,
        peer: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<TcpFlow, EndpointError> {
        if let Some(flow) = self.open_flow(Transport::Tcp, peer) {
            return Ok(flow);
        }
        let connect_error = |source| EndpointError::Connect { peer, source };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(peer)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(connect_error(err)),
            Err(_) => {
                return Err(connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {connect_timeout:?}"),
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let rules = StreamRules {
            limits: self.tcp_limits,
            edge: self.edge.clone(),
        };
        start_tcp_flow(
            self.inner.clone(),
            stream,
            rules,
            peer,
            tcp_addr(self.local),
            self.connections.clone(),
            &self.cancel,
        )
        .map_err(connect_error)
    }

    /// The open connection to `peer` over `transport`, if there is one.
    pub fn open_flow(&self, transport: Transport, peer: SocketAddr) -> Option<TcpFlow> {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(transport, peer))
            .filter(|flow| !flow.closed.is_cancelled())
            .cloned()
    }

    /// The connection a client registered over (TCP: a new one if it closed; TLS: the
    /// open one, or for a carrier we connected to before a new one to the same host;
    /// phones accept no TLS connections of ours).
    pub async fn flow_to(
        &self,
        transport: Transport,
        peer: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<TcpFlow, EndpointError> {
        if transport == Transport::Tls {
            if let Some(flow) = self.open_flow(Transport::Tls, peer) {
                return Ok(flow);
            }
            let carrier = self
                .carriers
                .names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&peer)
                .cloned();
            return match carrier {
                Some(host) => self.tls_flow(peer, &host, connect_timeout).await,
                None => Err(EndpointError::NoTlsFlow { peer }),
            };
        }
        self.tcp_flow(peer, connect_timeout).await
    }

    /// Whether the endpoint is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Whether `message` is a request rsipstack cannot take: no tag in From (RFC 2543 clients
/// sent none; RFC 3261 §8.1.1.3 makes it mandatory). An ACK is let through: it gets no
/// answer either way.
pub fn lacks_from_tag(message: &SipMessage) -> bool {
    use rsipstack::sip::HeadersExt as _;
    let SipMessage::Request(request) = message else {
        return false;
    };
    if *request.method() == Method::Ack {
        return false;
    }
    !request
        .from_header()
        .is_ok_and(|from| from.tag().ok().flatten().is_some())
}

/// The 400 for a request without a From tag, counted like the other refusals of the
/// message checks.
fn untagged_refusal(bytes: &[u8], transport: &'static str) -> Option<Vec<u8>> {
    let rejection = Rejection::bad_request("Missing From tag");
    metrics::counter!("leadline_sip_rejected_total", "transport" => transport,
        "status" => "400")
    .increment(1);
    rejection_response(bytes, &rejection, ALLOW)
}

/// Refuses new INVITEs in the receive loops while the gateway is behind or its calls in
/// set-up are at their bound; shared by the loops and the lag probe. Cheap to clone.
#[derive(Clone)]
pub struct EdgeShedding {
    calls_in_setup: CallsInSetup,
    /// Zero: no lag-based shedding.
    max_lag: Duration,
    gauge: Arc<LagGauge>,
    epoch: Instant,
}

impl EdgeShedding {
    pub fn new(calls_in_setup: CallsInSetup, max_lag: Duration) -> Self {
        Self {
            calls_in_setup,
            max_lag,
            gauge: Arc::default(),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The 503 for `message` if it is a new call (an INVITE without a To tag that no
    /// transaction handles yet) and the gateway refuses new calls now. A retransmission
    /// of an INVITE being handled, in-dialog requests and responses always pass.
    fn refusal(&self, inner: &EndpointInner, message: &SipMessage) -> Option<Vec<u8>> {
        self.refusal_at(inner, message, self.now_us())
    }

    fn refusal_at(
        &self,
        inner: &EndpointInner,
        message: &SipMessage,
        now_us: u64,
    ) -> Option<Vec<u8>> {
        use rsipstack::sip::HeadersExt as _;
        let SipMessage::Request(request) = message else {
            return None;
        };
        if *request.method() != Method::Invite
            || request
                .to_header()
                .is_ok_and(|to| to.tag().ok().flatten().is_some())
        {
            return None;
        }
        let (decision, changed) = self.gauge.decide(
            self.max_lag,
            now_us,
            self.calls_in_setup.count(),
            self.calls_in_setup.limit(),
        );
        if changed {
            let lag_ms = u64::try_from(self.gauge.lag(now_us).as_millis()).unwrap_or(0);
            if decision.shedding {
                tracing::warn!(lag_ms, "the gateway is behind: refusing new calls");
            } else {
                tracing::info!(lag_ms, "caught up: admitting new calls again");
            }
        }
        let overload = decision.refuse?;
        let key = TransactionKey::from_request(request, TransactionRole::Server).ok()?;
        if inner.transactions.contains_key(&key) || inner.finished_transactions.contains_key(&key) {
            return None;
        }
        metrics::counter!("leadline_sip_refused_total", "status" => "503",
            "reason" => overload.label())
        .increment(1);
        Some(overload_response(inner, request, overload))
    }
}

/// A stateless 503 with Retry-After: no transaction is made for a call we refuse. The
/// caller's ACK finds no transaction and is dropped, as for any ACK of a non-2xx we no
/// longer hold; a retransmitted INVITE is decided again.
fn overload_response(
    inner: &EndpointInner,
    request: &rsipstack::sip::Request,
    overload: Overload,
) -> Vec<u8> {
    use rsipstack::sip::HeadersExt as _;
    static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
    let mut response = inner.make_response(request, StatusCode::ServiceUnavailable, None);
    let tag = format!("shed{:x}", NEXT_TAG.fetch_add(1, Ordering::Relaxed));
    // RFC 3261 §8.2.6.2: a final response carries a To tag.
    let _ = response
        .to_header_mut()
        .and_then(|to| to.mut_tag(rsipstack::sip::param::Tag::new(tag)));
    response.headers.push(Header::RetryAfter(
        super::server::OVERLOAD_RETRY_AFTER_S.into(),
    ));
    response.headers.push(Header::Warning(
        format!("399 leadline \"{}\"", overload.reason()).into(),
    ));
    SipMessage::Response(response).to_string().into_bytes()
}

/// Samples the runtime's lag every [`PROBE_PERIOD`] for [`EdgeShedding`] (and the gauge
/// `leadline_sip_runtime_lag_seconds`).
async fn lag_probe(edge: EdgeShedding, cancel: CancellationToken) {
    let period_us = u64::try_from(PROBE_PERIOD.as_micros()).unwrap_or(5_000);
    loop {
        edge.gauge.armed(edge.now_us() + period_us);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PROBE_PERIOD) => {}
        }
        let lag_us = edge.gauge.fired(edge.now_us());
        metrics::gauge!("leadline_sip_runtime_lag_seconds").set(lag_us as f64 / 1e6);
    }
}

/// Sees every message the transaction layer sends (responses of server transactions
/// included, retransmissions too) and changes none.
struct SentMessages {
    calls_in_setup: CallsInSetup,
}

impl MessageInspector for SentMessages {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        self.calls_in_setup.on_send(&msg);
        msg
    }

    fn after_received(&self, msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        msg
    }
}

fn tcp_addr(local: SocketAddr) -> SipAddr {
    SipAddr {
        r#type: Some(Transport::Tcp),
        addr: local.into(),
    }
}

fn tls_addr(local: SocketAddr) -> SipAddr {
    SipAddr {
        r#type: Some(Transport::Tls),
        addr: local.into(),
    }
}

/// Whether a transaction's messages travel over TLS (`sips:` security for the media of
/// that leg, RFC 4568 §8.4: SDES keys only go over an encrypted hop).
pub fn is_tls(connection: Option<&SipConnection>) -> bool {
    matches!(connection, Some(SipConnection::Tls(_)))
}

/// The TLS listener: where, and the certificate it serves.
pub struct TlsListen {
    pub addr: SocketAddr,
    pub certificate: Arc<crate::tls::ReloadingCertificate>,
}

/// The running transport edge. Dropping it does not stop it: call `shutdown`.
pub struct SipEndpoint {
    pub inner: Arc<EndpointInner>,
    /// UDP and TCP are bound to this same address.
    pub local: SocketAddr,
    /// The TLS listener's address, when there is one.
    pub tls_local: Option<SocketAddr>,
    /// Message limits on TCP, for accepted and outgoing connections alike.
    tcp_limits: Limits,
    pub connections: Connections,
    carriers: CarrierTls,
    edge: EdgeShedding,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SipEndpoint {
    /// Binds UDP and TCP on `listen` (port 0: one free port for both) and starts the
    /// receive loops and the transaction timers. Returns the incoming server transactions.
    /// `edge` decides which new INVITEs the receive loops refuse; its calls in set-up
    /// learn of every final answer to an INVITE the stack sends. `carrier_ca`: the PEM
    /// bundle trusted for carriers over TLS besides the public roots.
    pub async fn start(
        listen: SocketAddr,
        tcp_max_message: usize,
        edge: EdgeShedding,
        tls: Option<TlsListen>,
        carrier_ca: Option<&Path>,
    ) -> Result<(SipEndpoint, TransactionReceiver), EndpointError> {
        let carriers = CarrierTls {
            connector: TlsConnector::from(carrier_tls_config(carrier_ca)?),
            names: Arc::default(),
        };
        let tcp_limits = Limits {
            max_message: tcp_max_message,
            ..Limits::UDP
        };
        let cancel = CancellationToken::new();
        let (udp, tcp) = bind_pair(listen, &cancel).await?;
        let local = tcp.local_addr().map_err(|source| EndpointError::Bind {
            addr: listen,
            source,
        })?;

        let transport_layer = TransportLayer::new(cancel.clone());
        // Known to the layer so requests we send (carrier REGISTER, OPTIONS pings) can
        // use it; never served by it (we do not call `Endpoint::serve`).
        transport_layer.add_transport(SipConnection::Udp(udp.clone()));
        let endpoint = EndpointBuilder::new()
            .with_inspector(Box::new(SentMessages {
                calls_in_setup: edge.calls_in_setup.clone(),
            }))
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport_layer)
            .with_user_agent(concat!("Leadline/", env!("CARGO_PKG_VERSION")))
            .with_allows(vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Register,
            ])
            .build();
        let incoming = endpoint.incoming_transactions()?;
        let inner = endpoint.inner.clone();

        let mut tasks = Vec::new();
        let timers = inner.clone();
        let stop = cancel.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = timers.process_timer() => {}
            }
        }));
        tasks.push(tokio::spawn(lag_probe(edge.clone(), cancel.clone())));
        tasks.push(tokio::spawn(udp_loop(
            inner.clone(),
            udp,
            edge.clone(),
            cancel.clone(),
        )));
        let local_sip = tcp_addr(local);
        let connections = Connections::default();
        tasks.push(tokio::spawn(tcp_accept_loop(
            inner.clone(),
            tcp,
            local_sip,
            tcp_limits,
            connections.clone(),
            edge.clone(),
            cancel.clone(),
        )));
        tracing::info!(%local, "SIP listening (udp, tcp)");
        let mut tls_local = None;
        if let Some(tls) = tls {
            let listener =
                TcpListener::bind(tls.addr)
                    .await
                    .map_err(|source| EndpointError::Bind {
                        addr: tls.addr,
                        source,
                    })?;
            let addr = listener
                .local_addr()
                .map_err(|source| EndpointError::Bind {
                    addr: tls.addr,
                    source,
                })?;
            let acceptor = TlsAcceptor::from(crate::tls::server_config(tls.certificate, &[]));
            tasks.push(tokio::spawn(tls_accept_loop(
                inner.clone(),
                listener,
                acceptor,
                tls_addr(addr),
                connections.clone(),
                edge.clone(),
                cancel.clone(),
            )));
            tracing::info!(local = %addr, "SIP listening (tls)");
            tls_local = Some(addr);
        }
        Ok((
            SipEndpoint {
                inner,
                local,
                tls_local,
                tcp_limits,
                connections,
                carriers,
                edge,
                cancel,
                tasks,
            },
            incoming,
        ))
    }

    /// A handle for sending requests of our own through this endpoint.
    pub fn handle(&self) -> EndpointHandle {
        EndpointHandle {
            tcp_limits: self.tcp_limits,
            inner: self.inner.clone(),
            local: self.local,
            tls_local: self.tls_local,
            connections: self.connections.clone(),
            carriers: self.carriers.clone(),
            edge: self.edge.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// Stops the loops and timers; transactions in flight end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// UDP and TCP on the same port. With port 0 the OS picks the UDP port; TCP may find it
/// taken, so try again with another.
async fn bind_pair(
    listen: SocketAddr,
    cancel: &CancellationToken,
) -> Result<(UdpConnection, TcpListener), EndpointError> {
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpConnection::create_connection(listen, None, Some(cancel.child_token()))
            .await
            .map_err(|e| EndpointError::Bind {
                addr: listen,
                source: std::io::Error::other(e.to_string()),
            })?;
        let port = udp
            .get_addr()
            .get_socketaddr()
            .map_err(|e| EndpointError::Bind {
                addr: listen,
                source: std::io::Error::other(e.to_string()),
            })?
            .port();
        let tcp_addr = SocketAddr::new(listen.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => {
                last_error = Some(EndpointError::Bind {
                    addr: tcp_addr,
                    source,
                })
            }
        }
    }
    Err(last_error.expect("at least one attempt"))
}

fn is_keepalive(packet: &[u8]) -> bool {
    packet.iter().all(u8::is_ascii_whitespace)
}

async fn udp_loop(
    inner: Arc<EndpointInner>,
    udp: UdpConnection,
    edge: EdgeShedding,
    cancel: CancellationToken,
) {
    let limits = Limits::UDP;
    // One byte more than the limit tells an oversized datagram from a full one.
    let mut buf = vec![0u8; limits.max_message + 1];
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => return,
            r = udp.recv_raw(&mut buf) => r,
        };
        let (len, from) = match received {
            Ok(r) => r,
            Err(err) => {
                tracing::debug!(%err, "UDP receive failed");
                continue;
            }
        };
        let packet = &buf[..len];
        if is_keepalive(packet) {
            // RFC 5626 §4.4.1: answer a double-CRLF ping with a single CRLF pong.
            if packet == b"\r\n\r\n" {
                let _ = udp.send_raw(b"\r\n", &from).await;
            }
            continue;
        }
        let Ok(source) = from.get_socketaddr() else {
            continue;
        };
        match parse_message(packet, &limits) {
            Ok(msg) if lacks_from_tag(&msg) => {
                if let Some(response) = untagged_refusal(packet, "udp") {
                    let _ = udp.send_raw(&response, &from).await;
                }
            }
            Ok(msg) => {
                if let Some(refusal) = edge.refusal(&inner, &msg) {
                    let _ = udp.send_raw(&refusal, &from).await;
                    continue;
                }
                let msg = match SipConnection::update_msg_received(msg, source, Transport::Udp) {
                    Ok(msg) => msg,
                    Err(err) => {
                        tracing::debug!(%source, %err, "cannot mark Via received/rport");
                        continue;
                    }
                };
                if let Err(err) = inner
                    .on_received_message(msg, SipConnection::Udp(udp.clone()), &from)
                    .await
                {
                    tracing::debug!(%source, %err, "transaction layer refused a message");
                }
            }
            Err(rejection) => {
                metrics::counter!("leadline_sip_rejected_total", "transport" => "udp",
                    "status" => rejection.status.to_string())
                .increment(1);
                tracing::info!(%source, status = rejection.status, reason = %rejection.reason,
                    "refused a SIP message");
                if let Some(response) = rejection_response(packet, &rejection, ALLOW) {
                    let _ = udp.send_raw(&response, &from).await;
                }
            }
        }
    }
}

/// The next accepted connection of a stream listener; `None` once `cancel` fires.
async fn accept_next(
    listener: &TcpListener,
    cancel: &CancellationToken,
    transport: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, transport, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_accept_loop(
    inner: Arc<EndpointInner>,
    listener: TcpListener,
    local: SipAddr,
    limits: Limits,
    connections: Connections,
    edge: EdgeShedding,
    cancel: CancellationToken,
) {
    while let Some((stream, peer)) = accept_next(&listener, &cancel, "TCP").await {
        let _ = stream.set_nodelay(true);
        let rules = StreamRules {
            limits,
            edge: edge.clone(),
        };
        if let Err(err) = start_tcp_flow(
            inner.clone(),
            stream,
            rules,
            peer,
            local.clone(),
            connections.clone(),
            &cancel,
        ) {
            tracing::debug!(%peer, %err, "cannot wrap TCP connection");
        }
    }
}

/// What a TCP connection's reader applies to what it reads: the message limits and the
/// edge's shedding of new calls.
struct StreamRules {
    limits: Limits,
    edge: EdgeShedding,
}

/// Registers a connected stream in `connections` and starts its receive loop; the one
/// path for accepted and for outgoing connections.
fn start_tcp_flow(
    inner: Arc<EndpointInner>,
    stream: TcpStream,
    rules: StreamRules,
    peer: SocketAddr,
    local: SipAddr,
    connections: Connections,
    cancel: &CancellationToken,
) -> std::io::Result<TcpFlow> {
    static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);
    let conn = TcpConnection::from_stream(stream, local, Some(cancel.child_token()))
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let flow = TcpFlow {
        connection: SipConnection::Tcp(conn.clone()),
        closed: CancellationToken::new(),
        id: NEXT_FLOW.fetch_add(1, Ordering::Relaxed),
    };
    // In the map before the loop runs, so a caller can send on it at once.
    connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((Transport::Tcp, peer), flow.clone());
    tokio::spawn(tcp_connection_loop(
        inner,
        conn,
        rules,
        flow.clone(),
        peer,
        connections,
        cancel.child_token(),
    ));
    Ok(flow)
}

async fn tcp_connection_loop(
    inner: Arc<EndpointInner>,
    conn: TcpConnection,
    rules: StreamRules,
    flow: TcpFlow,
    peer: SocketAddr,
    connections: Connections,
    cancel: CancellationToken,
) {
    let StreamRules { limits, edge } = rules;
    let sip_conn = flow.connection.clone();
    let from = SipAddr {
        r#type: Some(Transport::Tcp),
        addr: peer.into(),
    };
    let Some(mut read_half) = conn.inner.read_half.lock().await.take() else {
        forget_flow(&connections, (Transport::Tcp, peer), &flow);
        return;
    };
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'connection: loop {
        let read = tokio::select! {
            () = cancel.cancelled() => break,
            r = tokio::time::timeout(TCP_IDLE, read_half.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
        loop {
            match frame(&buf, &limits) {
                Frame::Incomplete => {
                    // A frame can never be bigger than the limit: a peer that keeps
                    // sending without a complete message is cut off (bounded buffer).
                    if buf.len() > limits.max_message {
                        break 'connection;
                    }
                    break;
                }
                Frame::KeepAlive(n) => {
                    if buf[..n].starts_with(b"\r\n\r\n") {
                        let _ = conn.inner.send_raw(b"\r\n").await;
                    }
                    buf.advance(n);
                }
                Frame::Message(n) => {
                    let bytes = buf.split_to(n);
                    match parse_message(&bytes, &limits) {
                        Ok(msg) if lacks_from_tag(&msg) => {
                            if let Some(response) = untagged_refusal(&bytes, "tcp") {
                                let _ = conn.inner.send_raw(&response).await;
                            }
                        }
                        Ok(msg) => {
                            if let Some(refusal) = edge.refusal(&inner, &msg) {
                                let _ = conn.inner.send_raw(&refusal).await;
                                continue;
                            }
                            let Ok(msg) =
                                SipConnection::update_msg_received(msg, peer, Transport::Tcp)
                            else {
                                continue;
                            };
                            if let Err(err) = inner
                                .on_received_message(msg, sip_conn.clone(), &from)
                                .await
                            {
                                tracing::debug!(%peer, %err, "transaction layer refused a message");
                            }
                        }
                        Err(rejection) => {
                            metrics::counter!("leadline_sip_rejected_total", "transport" => "tcp",
                                "status" => rejection.status.to_string())
                            .increment(1);
                            if let Some(response) = rejection_response(&bytes, &rejection, ALLOW) {
                                let _ = conn.inner.send_raw(&response).await;
                            }
                        }
                    }
                }
                Frame::Invalid(rejection) => {
                    // The stream cannot be resynchronised without a valid Content-Length
                    // (§18.3): answer if we can, then close.
                    metrics::counter!("leadline_sip_rejected_total", "transport" => "tcp",
                        "status" => rejection.status.to_string())
                    .increment(1);
                    if let Some(response) = rejection_response(&buf, &rejection, ALLOW) {
                        let _ = conn.inner.send_raw(&response).await;
                    }
                    break 'connection;
                }
            }
        }
    }
    forget_flow(&connections, (Transport::Tcp, peer), &flow);
    let _ = sip_conn.close().await;
}

async fn tls_accept_loop(
    inner: Arc<EndpointInner>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    local: SipAddr,
    connections: Connections,
    edge: EdgeShedding,
    cancel: CancellationToken,
) {
    while let Some((stream, peer)) = accept_next(&listener, &cancel, "TLS").await {
        let _ = stream.set_nodelay(true);
        // The handshake runs in its own task: a slow client must not hold up the others.
        let (inner, acceptor, local) = (inner.clone(), acceptor.clone(), local.clone());
        let (connections, edge, cancel) = (connections.clone(), edge.clone(), cancel.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    metrics::counter!("leadline_sip_tls_handshake_failed_total").increment(1);
                    tracing::info!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let remote = tls_addr(peer);
            match TlsConnection::from_server_stream(
                stream,
                local,
                remote,
                Some(cancel.child_token()),
            )
            .await
            {
                Ok(conn) => {
                    start_tls_flow(inner, conn, edge, peer, connections, &cancel);
                }
                Err(err) => tracing::debug!(%peer, %err, "cannot wrap TLS connection"),
            }
        });
    }
}

/// Registers a TLS connection (accepted, or opened by us to a carrier) in `connections`
/// and starts its receive loop.
pub(crate) fn start_tls_flow(
    inner: Arc<EndpointInner>,
    conn: TlsConnection,
    edge: EdgeShedding,
    peer: SocketAddr,
    connections: Connections,
    cancel: &CancellationToken,
) -> TcpFlow {
    static NEXT_FLOW: AtomicU64 = AtomicU64::new(1 << 62);
    let flow = TcpFlow {
        connection: SipConnection::Tls(conn.clone()),
        closed: CancellationToken::new(),
        id: NEXT_FLOW.fetch_add(1, Ordering::Relaxed),
    };
    connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((Transport::Tls, peer), flow.clone());
    tokio::spawn(tls_connection_loop(
        inner,
        conn,
        edge,
        flow.clone(),
        peer,
        connections,
        cancel.child_token(),
    ));
    flow
}

/// Reads one TLS connection: rsipstack's stream reader frames and parses (messages above
/// 64 KiB or unparsable close the connection), and this loop applies the edge's checks
/// to what it hands over.
async fn tls_connection_loop(
    inner: Arc<EndpointInner>,
    conn: TlsConnection,
    edge: EdgeShedding,
    flow: TcpFlow,
    peer: SocketAddr,
    connections: Connections,
    cancel: CancellationToken,
) {
    let sip_conn = flow.connection.clone();
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let reader = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.serve_loop(sender, TCP_IDLE).await })
    };
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            e = events.recv() => e,
        };
        let Some(rsipstack::transport::TransportEvent::Incoming(msg, _, from)) = event else {
            if event.is_none() {
                break;
            }
            continue;
        };
        if lacks_from_tag(&msg) {
            if let Some(response) = untagged_refusal(msg.to_string().as_bytes(), "tls") {
                let _ = conn.send_raw(&response).await;
            }
            continue;
        }
        if let Some(refusal) = edge.refusal(&inner, &msg) {
            let _ = conn.send_raw(&refusal).await;
            continue;
        }
        if let Err(err) = inner
            .on_received_message(msg, sip_conn.clone(), &from)
            .await
        {
            tracing::debug!(%peer, %err, "transaction layer refused a message");
        }
    }
    reader.abort();
    forget_flow(&connections, (Transport::Tls, peer), &flow);
    let _ = sip_conn.close().await;
}

/// Removes `flow` from the map (unless a newer flow to the same peer replaced it) and
/// tells whoever watches it that it is closed.
fn forget_flow(connections: &Connections, key: (Transport, SocketAddr), flow: &TcpFlow) {
    let mut map = connections.lock().unwrap_or_else(|e| e.into_inner());
    if map.get(&key).is_some_and(|f| f.id == flow.id) {
        map.remove(&key);
    }
    drop(map);
    flow.closed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> SipMessage {
        parse_message(text.replace('\n', "\r\n").as_bytes(), &Limits::UDP).expect("parses")
    }

    fn request(method: &str, from: &str) -> SipMessage {
        message(&format!(
            "{method} sip:101@gw.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1
From: {from}
To: <sip:101@gw.example.com>
Call-ID: untagged-1
CSeq: 1 {method}
Max-Forwards: 70
Content-Length: 0

"
        ))
    }

    /// The edge refuses only new calls while behind: an INVITE without a To tag that no
    /// transaction handles. Its retransmission while it is handled, in-dialog requests,
    /// other methods and responses pass; the refusal is a 503 with Retry-After and a To
    /// tag, counted by its reason.
    #[tokio::test]
    async fn behind_only_new_invites_are_refused_never_retransmissions_or_dialogs() {
        let inner = EndpointBuilder::new().build().inner.clone();
        let edge = EdgeShedding::new(CallsInSetup::new(10), Duration::from_millis(40));
        // The probe was due at 1 µs and has not fired 41 ms later: behind.
        edge.gauge.armed(1);
        let behind_at = 1 + 41_000;
        let refuse = |message: &SipMessage| edge.refusal_at(&inner, message, behind_at);
        let invite = |call_id: &str, to_tag: &str| {
            message(&format!(
                "INVITE sip:+4930901820@gw.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{call_id}
From: <sip:+4917612345678@192.0.2.1>;tag=c1
To: <sip:+4930901820@gw.example.com>{to_tag}
Call-ID: {call_id}
CSeq: 1 INVITE
Max-Forwards: 70
Content-Length: 0

"
            ))
        };
        let handled = invite("handled", "");
        let SipMessage::Request(original) = &handled else {
            unreachable!()
        };
        let key = TransactionKey::from_request(original, TransactionRole::Server).unwrap();
        let _tx = rsipstack::transaction::transaction::Transaction::new_server(
            key,
            original.clone(),
            inner.clone(),
            None,
        );
        assert!(
            refuse(&handled).is_none(),
            "a retransmission of a call being handled"
        );
        assert!(refuse(&invite("re", ";tag=gw1")).is_none(), "a re-INVITE");
        assert!(refuse(&request("BYE", "<sip:a@192.0.2.1>;tag=a")).is_none());
        assert!(refuse(&request("OPTIONS", "<sip:a@192.0.2.1>;tag=a")).is_none());
        let answer = refuse(&invite("new", "")).expect("a new call is refused");
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
        assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
        assert!(answer.contains("Call-ID: new\r\n"), "{answer}");
        assert!(answer.contains(";tag=shed"), "a To tag: {answer}");
        assert!(answer.contains("gateway is behind"), "{answer}");
        // Caught up: the same new call is admitted.
        edge.gauge.fired(2);
        edge.gauge.armed(1_000_000);
        assert!(
            edge.refusal_at(&inner, &invite("new", ""), 1_000_001)
                .is_none()
        );
    }

    /// A carrier's certificate is checked for the trunk's host, a name or an IP literal
    /// (bracketed IPv6 too); the CA bundle must hold certificates.
    #[test]
    fn carrier_tls_names_and_ca_bundles() {
        assert!(matches!(
            server_name("sip.example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("[2001:db8::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("not a host!").is_err());
        assert!(carrier_tls_config(None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = carrier_tls_config(Some(&empty)).unwrap_err().to_string();
        assert!(
            err.starts_with("sip_tls_ca: ") && err.contains("ca.pem"),
            "{err}"
        );
    }

    /// RFC 3261 §8.1.1.3: a request without a From tag is refused with a 400 that says
    /// so; an ACK never is, and a response is none of our business.
    #[test]
    fn a_request_without_a_from_tag_is_refused_by_name() {
        let cases = [
            ("INVITE", "<sip:alice@192.0.2.1>", true),
            ("OPTIONS", "sip:alice@192.0.2.1", true),
            ("INVITE", "<sip:alice@192.0.2.1>;tag=a1", false),
            ("ACK", "<sip:alice@192.0.2.1>", false),
        ];
        for (method, from, refused) in cases {
            assert_eq!(
                lacks_from_tag(&request(method, from)),
                refused,
                "{method} From: {from}"
            );
        }
        let response = message(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1
From: <sip:alice@192.0.2.1>
To: <sip:101@gw.example.com>;tag=b
Call-ID: untagged-1
CSeq: 1 OPTIONS
Content-Length: 0

",
        );
        assert!(!lacks_from_tag(&response));
        let bytes = "OPTIONS sip:101@gw.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
                     From: <sip:alice@192.0.2.1>\r\nTo: <sip:101@gw.example.com>\r\nCall-ID: untagged-1\r\n\
                     CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let answer = String::from_utf8(untagged_refusal(bytes.as_bytes(), "udp").unwrap()).unwrap();
        assert!(
            answer.starts_with("SIP/2.0 400 Bad Request: Missing From tag\r\n"),
            "{answer}"
        );
        assert!(answer.contains("Call-ID: untagged-1\r\n"), "{answer}");
    }
}
