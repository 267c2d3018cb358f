//! One trunk's registration at work: runs its [`Registration`], sends the REGISTERs
//! through [`SipClient`], answers challenges with [`digest::answer`], and writes the state
//! to `trunk_registrations`, the gauge and the log.
//!
//! What a response means for the registration is the state machine's business; this file
//! only turns responses into [`Outcome`]s and actions into requests.

use std::time::Duration;

use rand::Rng as _;
use rsipstack::sip::{Header, Method, Response, Transport};
use rsipstack::transport::SipConnection;
use rsipstack::transport::stream::StreamConnection as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::task::Account;
use super::{Action, Failure, Outcome, Registration, Request, Status};
use crate::crm::model::{Millis, Transport as TrunkTransport, TrunkRegistrationState};
use crate::sip::client::{self, ClientError, Outgoing, SipClient, Target};
use crate::sip::digest;
use crate::sip::endpoint::EndpointError;
use crate::sip::registrar;
use crate::store::{Store, TrunkRegistrationRecord, now_ms};

/// The transaction ends a REGISTER nobody answers after 32 s (Timer F); this only bounds
/// a transaction that would hang for another reason.
const REQUEST_DEADLINE: Duration = Duration::from_secs(40);
/// At shutdown, how long one un-register may take: a carrier that does not answer must
/// not hold the process.
pub(super) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(2);

/// A challenge to answer in the next requests: the header value and which header.
struct Auth {
    challenge: String,
    proxy: bool,
    /// Requests sent with this nonce so far (RFC 7616 §3.4: `nc` counts them).
    nc: u32,
}

/// One trunk's registration: owns the state machine and the dialog-like identifiers a
/// registration keeps (RFC 3261 §10.2.4: one Call-ID, CSeq counting up).
pub(super) struct Worker {
    store: Store,
    client: SipClient,
    account: Account,
    /// A changed account, used from the next REGISTER on (the un-register of the old
    /// binding still goes out with the old one).
    pending: Option<Account>,
    machine: Registration,
    call_id: String,
    from_tag: String,
    cseq: u32,
    auth: Option<Auth>,
    /// Our contact in the last REGISTER, to find our binding in the 200 OK.
    contact: Option<String>,
    /// The TCP connection the binding was made over.
    flow: Option<SipConnection>,
    flow_closed: CancellationToken,
    published: Option<Status>,
    cancel: CancellationToken,
}

impl Worker {
    pub fn new(
        store: Store,
        client: SipClient,
        account: Account,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            store,
            client,
            machine: Registration::new(account.interval_s),
            account,
            pending: None,
            call_id: new_call_id(),
            from_tag: random_hex(8),
            cseq: 0,
            auth: None,
            contact: None,
            flow: None,
            flow_closed: CancellationToken::new(),
            published: None,
            cancel,
        }
    }

    /// Registers until the trunk is removed (then un-registers) or the gateway stops.
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Account>>) {
        let mut action = self.machine.start();
        let mut stopping = false;
        let mut removed = false;
        // The time the machine last saw, so the stored state agrees with it exactly.
        let mut at = now_ms();
        loop {
            self.publish(at).await;
            action = match action {
                Action::Stop => break,
                Action::Send(request) => match self.exchange(request, stopping).await {
                    Some(outcome) => {
                        at = now_ms();
                        self.machine.on_outcome(outcome, at, rand::rng().random())
                    }
                    None => {
                        // Shut down while waiting for the carrier: take our binding off
                        // it, briefly (the request's answer no longer matters).
                        stopping = true;
                        at = now_ms();
                        self.machine.on_removed(at)
                    }
                },
                Action::Wait { .. } if stopping => break,
                Action::Wait { until } => {
                    let sleep = tokio::time::sleep(until_instant(until));
                    let crlf = self.account.tcp_crlf.filter(|_| self.flow.is_some());
                    let ping = async {
                        match crlf {
                            Some(every) => tokio::time::sleep(every).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = self.cancel.cancelled() => {
                            // Shutdown: take our binding off the carrier, briefly.
                            stopping = true;
                            at = now_ms();
                            self.machine.on_removed(at)
                        }
                        () = sleep => {
                            at = now_ms();
                            self.machine.on_timer(at)
                        }
                        () = self.flow_closed.cancelled(), if self.flow.is_some() => {
                            self.flow = None;
                            tracing::info!(trunk = %self.account.carrier.name,
                                "TCP connection to the carrier closed; registering again");
                            at = now_ms();
                            self.machine.on_flow_lost(at)
                        }
                        () = ping => {
                            self.send_crlf().await;
                            action
                        }
                        changed = updates.changed(), if !removed => {
                            let next = match changed {
                                Ok(()) => updates.borrow_and_update().clone(),
                                Err(_) => None,
                            };
                            removed = next.is_none();
                            at = now_ms();
                            self.on_update(next, action, at)
                        }
                    }
                }
            };
        }
        metrics::gauge!("leadline_sip_trunk_registered", "trunk" => self.account.carrier.name.clone())
            .set(0.0);
    }

    fn on_update(&mut self, next: Option<Account>, waiting: Action, now: Millis) -> Action {
        match next {
            None => self.machine.on_removed(now),
            Some(next)
                if next.same_registration(self.pending.as_ref().unwrap_or(&self.account)) =>
            {
                // A rename or a keep-alive change: the binding stays as it is.
                if let Some(pending) = &mut self.pending {
                    *pending = next;
                    return waiting;
                }
                if next.carrier.name != self.account.carrier.name {
                    // The gauge moves to the new name.
                    metrics::gauge!("leadline_sip_trunk_registered", "trunk" => self.account.carrier.name.clone())
                        .set(0.0);
                    self.published = None;
                }
                self.account = next;
                waiting
            }
            Some(next) => {
                tracing::info!(trunk = %next.carrier.name, "carrier trunk changed; registering anew");
                let interval_s = next.interval_s;
                self.pending = Some(next);
                self.machine.on_trunk_changed(interval_s, now)
            }
        }
    }

    /// Sends one REGISTER and reads its response as an [`Outcome`]; `None` when the
    /// gateway shuts down meanwhile.
    async fn exchange(&mut self, request: Request, stopping: bool) -> Option<Outcome> {
        if matches!(request, Request::Register { .. })
            && let Some(next) = self.pending.take()
        {
            self.switch_account(next);
        }
        let expires_s = match request {
            Request::Register { expires_s } => expires_s,
            Request::Unregister => 0,
        };
        if stopping {
            return Some(self.send_register(expires_s, SHUTDOWN_DEADLINE).await);
        }
        let cancel = self.cancel.clone();
        let work = self.send_register(expires_s, REQUEST_DEADLINE);
        tokio::select! {
            outcome = work => Some(outcome),
            () = cancel.cancelled() => None,
        }
    }

    async fn send_register(&mut self, expires_s: u32, deadline: Duration) -> Outcome {
        let carrier = &self.account.carrier;
        let addr = match client::resolve(&carrier.host, carrier.port).await {
            Ok(addr) => addr,
            Err(err) => return Outcome::Failed(Failure::Unreachable(err.to_string())),
        };
        let transport = match carrier.transport {
            TrunkTransport::Udp => Transport::Udp,
            TrunkTransport::Tcp => Transport::Tcp,
            TrunkTransport::Tls => Transport::Tls,
        };
        let target = Target { addr, transport };
        let flow = match transport {
            Transport::Tcp => Some(self.client.tcp_flow(addr).await),
            Transport::Tls => Some(self.client.tls_flow(addr, &carrier.host).await),
            _ => None,
        };
        match flow {
            Some(Ok(flow)) => {
                self.flow = Some(flow.connection);
                self.flow_closed = flow.closed;
            }
            Some(Err(err)) => return Outcome::Failed(connection_failure(err)),
            None => {}
        }
        let request = match self.build(expires_s, target) {
            Ok(request) => request,
            Err(failure) => return Outcome::Failed(failure),
        };
        match self.client.send(request, target, deadline).await {
            Ok(response) => self.read(&response, expires_s),
            Err(ClientError::NoResponse(_)) => Outcome::Failed(Failure::NoResponse),
            Err(err) => Outcome::Failed(connection_failure(err)),
        }
    }

    fn build(
        &mut self,
        expires_s: u32,
        target: Target,
    ) -> Result<rsipstack::sip::Request, Failure> {
        let carrier = &self.account.carrier;
        let host = uri_host(&carrier.host);
        let transport_param = match target.transport {
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            _ => "",
        };
        // RFC 3261 §10.2: the Request-URI names the registrar's domain, no user part.
        let uri = format!("sip:{host}:{}{transport_param}", carrier.port);
        let aor = format!("sip:{}@{host}", escape_user(&carrier.username));
        let contact = format!(
            "sip:{}@{}{transport_param}",
            escape_user(&carrier.username),
            self.client.local_addr_over(target.addr, target.transport)
        );
        self.cseq = self.cseq.wrapping_add(1).max(1);
        let mut headers = vec![
            Header::Contact(format!("<{contact}>").into()),
            Header::Expires(expires_s.into()),
        ];
        if let Some(auth) = &mut self.auth {
            let Some(password) = carrier.password.as_deref() else {
                return Err(Failure::Unanswerable(
                    "no password is stored for the trunk".into(),
                ));
            };
            auth.nc = auth.nc.saturating_add(1);
            let value = digest::answer(
                &auth.challenge,
                "REGISTER",
                &uri,
                &carrier.username,
                password,
                &random_hex(16),
                auth.nc,
            )
            .map_err(|err| Failure::Unanswerable(err.to_string()))?;
            headers.push(if auth.proxy {
                Header::ProxyAuthorization(value.into())
            } else {
                Header::Authorization(value.into())
            });
        }
        self.contact = Some(contact);
        self.client
            .request(
                Outgoing {
                    method: Method::Register,
                    uri: &uri,
                    from: &aor,
                    from_tag: &self.from_tag,
                    to: &aor,
                    call_id: &self.call_id,
                    cseq: self.cseq,
                    headers,
                },
                target,
            )
            .map_err(|err| Failure::Unreachable(err.to_string()))
    }

    fn read(&mut self, response: &Response, expires_s: u32) -> Outcome {
        let status = response.status_code.code();
        match status {
            200..=299 if expires_s == 0 => Outcome::Registered { expires_s: 0 },
            200..=299 => Outcome::Registered {
                expires_s: granted_expiry(response, self.contact.as_deref(), expires_s),
            },
            401 | 407 => {
                let proxy = status == 407;
                match self.take_challenge(response, proxy) {
                    Ok(stale) => Outcome::Challenged { stale },
                    Err(failure) => Outcome::Failed(failure),
                }
            }
            423 => Outcome::IntervalTooBrief {
                min_expires_s: response.headers.iter().find_map(|h| match h {
                    Header::MinExpires(v) => registrar::delta_seconds(v.value()),
                    _ => None,
                }),
            },
            _ => {
                // A refusal invalidates what we knew about the nonce.
                self.auth = None;
                Outcome::Failed(Failure::Rejected {
                    status,
                    reason: client::reason_phrase(response),
                    retry_after_s: client::retry_after(response),
                })
            }
        }
    }

    /// Keeps the best challenge of a 401/407 for the next request; `Ok(stale)`.
    fn take_challenge(&mut self, response: &Response, proxy: bool) -> Result<bool, Failure> {
        let values: Vec<&str> = response
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::WwwAuthenticate(v) if !proxy => Some(v.value()),
                Header::ProxyAuthenticate(v) if proxy => Some(v.value()),
                _ => None,
            })
            .collect();
        self.auth = None;
        let Some(chosen) = digest::choose_challenge(values.iter().copied()) else {
            let why = match values.first().map(|v| digest::parse_challenge(v)) {
                Some(Err(err)) => err.to_string(),
                _ => "the response carries no digest challenge".to_owned(),
            };
            return Err(Failure::Unanswerable(why));
        };
        if self.account.carrier.password.is_none() {
            return Err(Failure::Unanswerable(
                "no password is stored for the trunk".into(),
            ));
        }
        let stale = digest::parse_challenge(chosen).is_ok_and(|c| c.stale);
        self.auth = Some(Auth {
            challenge: chosen.to_owned(),
            proxy,
            nc: 0,
        });
        Ok(stale)
    }

    /// A new account registers a new binding: new Call-ID, CSeq and credentials.
    fn switch_account(&mut self, next: Account) {
        if next.carrier.name != self.account.carrier.name {
            metrics::gauge!("leadline_sip_trunk_registered", "trunk" => self.account.carrier.name.clone())
                .set(0.0);
        }
        self.account = next;
        self.call_id = new_call_id();
        self.from_tag = random_hex(8);
        self.cseq = 0;
        self.auth = None;
        self.flow = None;
        self.published = None;
    }

    async fn send_crlf(&self) {
        // The carrier's pong, or the next REGISTER, shows whether the flow lives.
        match &self.flow {
            Some(SipConnection::Tcp(conn)) => {
                let _ = conn.inner.send_raw(b"\r\n\r\n").await;
            }
            Some(SipConnection::Tls(conn)) => {
                let _ = conn.send_raw(b"\r\n\r\n").await;
            }
            _ => {}
        }
    }

    /// Stores, logs and exports the state when it changed. State changes are logged once
    /// (INFO, or WARN for a failure); further failed retries only at DEBUG.
    async fn publish(&mut self, now: Millis) {
        let status = self.machine.status();
        if self.published.as_ref() == Some(&status) {
            return;
        }
        let name = self.account.carrier.name.clone();
        let before = self.published.as_ref().map(|s| s.state);
        let failures_before = self.published.as_ref().map_or(0, |s| s.failures);
        if status.failures > failures_before {
            metrics::counter!("leadline_sip_trunk_register_failures_total", "trunk" => name.clone())
                .increment(1);
        }
        metrics::gauge!("leadline_sip_trunk_registered", "trunk" => name.clone()).set(
            if self.machine.is_registered() {
                1.0
            } else {
                0.0
            },
        );
        let error = status.last_error.as_deref();
        let retry_in_s = status.next_attempt_at.map(|at| (at - now).max(0) / 1000);
        if before != Some(status.state) {
            match (status.state, error) {
                (TrunkRegistrationState::Registered, _) => {
                    let until = status.registered_until.map(crate::store::rfc3339);
                    tracing::info!(trunk = %name, until = until.as_deref().unwrap_or("?"),
                        "registered to the carrier")
                }
                (TrunkRegistrationState::Failed, _) => tracing::warn!(trunk = %name,
                    error = error.unwrap_or("?"), retry_in_s = retry_in_s.unwrap_or(0),
                    "registration to the carrier failed"),
                (TrunkRegistrationState::Registering, _) => {
                    tracing::info!(trunk = %name, "registering to the carrier")
                }
                (TrunkRegistrationState::Unregistered, None) => {
                    tracing::info!(trunk = %name, "un-registered from the carrier")
                }
                (TrunkRegistrationState::Unregistered, Some(error)) => {
                    tracing::info!(trunk = %name, error, "stopped registering to the carrier")
                }
            }
        } else if status.failures > failures_before {
            tracing::debug!(trunk = %name, failures = status.failures, error = error.unwrap_or("?"),
                retry_in_s = retry_in_s.unwrap_or(0), "registration to the carrier failed again");
        }
        let record = TrunkRegistrationRecord {
            trunk: self.account.carrier.id.clone(),
            state: status.state,
            registered_until: status.registered_until,
            last_error: status.last_error.clone(),
            failures: i64::from(status.failures),
            next_attempt_at: status.next_attempt_at,
            updated_at: now,
        };
        if let Err(err) = self.store.save_trunk_registration(&record).await {
            tracing::warn!(trunk = %name, %err, "cannot store the registration state");
        }
        self.published = Some(status);
    }
}

/// The expiry granted to our contact (RFC 3261 §10.2.4): its `expires` parameter in the
/// 200 OK, else the `Expires` header, else what we asked for. A registrar that lists
/// several contacts (other devices of the account) is searched for ours; a single
/// contact is taken as ours even when the registrar rewrote it.
fn granted_expiry(response: &Response, ours: Option<&str>, asked_s: u32) -> u32 {
    let contacts: Vec<registrar::ContactEntry> = response
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Contact(v) => Some(v.value()),
            _ => None,
        })
        .flat_map(|value| registrar::split_outside_quotes_and_brackets(value, b','))
        .filter_map(|item| registrar::contact_entry(item.trim()).ok())
        .collect();
    let mine = ours.and_then(|ours| contacts.iter().find(|c| registrar::same_uri(&c.uri, ours)));
    let contact_expires = match (mine, contacts.as_slice()) {
        (Some(entry), _) | (None, [entry]) => entry.expires,
        _ => None,
    };
    contact_expires
        .or_else(|| {
            response.headers.iter().find_map(|h| match h {
                Header::Expires(v) => registrar::delta_seconds(v.value()),
                _ => None,
            })
        })
        .unwrap_or(asked_s)
}

/// A host for a URI: IPv6 in brackets.
/// Why a request could not go out: a refused TLS handshake (the carrier's certificate)
/// is told apart from a carrier that cannot be reached at all.
fn connection_failure(err: ClientError) -> Failure {
    match err {
        ClientError::Endpoint(endpoint) => match *endpoint {
            EndpointError::TlsHandshake { reason, .. } => Failure::Tls(reason),
            other => Failure::Unreachable(other.to_string()),
        },
        other => Failure::Unreachable(other.to_string()),
    }
}

fn uri_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Escapes what may not stand in a SIP URI's user part (RFC 3261 §25.1: unreserved and
/// user-unreserved characters stay).
fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn new_call_id() -> String {
    format!("{}@leadline", uuid::Uuid::new_v4())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

fn until_instant(until: Millis) -> Duration {
    Duration::from_millis(u64::try_from(until.saturating_sub(now_ms())).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    fn response(headers: &str) -> Response {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:u@c>;tag=1\r\nTo: <sip:u@c>;tag=2\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\n\
             {headers}Content-Length: 0\r\n\r\n"
        );
        match SipMessage::try_from(text.as_str()).expect("parses") {
            SipMessage::Response(r) => r,
            SipMessage::Request(_) => panic!("a response"),
        }
    }

    #[test]
    fn t2_granted_expiry_comes_from_our_contact_then_expires_then_the_request() {
        let ours = "sip:u@10.0.0.1:5060";
        let cases = [
            (
                "Contact: <sip:u@10.0.0.1:5060>;expires=120\r\nExpires: 30\r\n",
                120,
            ),
            (
                "Contact: <sip:u@10.9.9.9>;expires=999, <sip:u@10.0.0.1:5060>;expires=300\r\n",
                300,
            ),
            // One contact, rewritten by the registrar: still ours.
            ("Contact: <sip:u@192.0.2.1:4000>;expires=45\r\n", 45),
            ("Expires: 90\r\n", 90),
            (
                "Contact: <sip:u@10.9.9.9>;expires=5, <sip:u@10.9.9.8>;expires=6\r\n",
                600,
            ),
            ("", 600),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                granted_expiry(&response(headers), Some(ours), 600),
                expected,
                "{headers}"
            );
        }
    }

    /// T2 over TLS: a refused certificate is shown as a TLS failure, with rustls's
    /// reason, not as an unreachable carrier.
    #[test]
    fn t2_a_refused_tls_handshake_is_reported_as_tls() {
        let refused = ClientError::from(EndpointError::TlsHandshake {
            peer: "192.0.2.1:5061".parse().unwrap(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert_eq!(
            connection_failure(refused).to_string(),
            "tls: invalid peer certificate: UnknownIssuer"
        );
        let down = ClientError::from(EndpointError::Connect {
            peer: "192.0.2.1:5061".parse().unwrap(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        assert!(
            connection_failure(down)
                .to_string()
                .starts_with("cannot reach the carrier: "),
        );
    }

    #[test]
    fn user_parts_and_ipv6_hosts_are_written_for_uris() {
        assert_eq!(escape_user("+4930 12@x"), "+4930%2012%40x");
        assert_eq!(uri_host("2001:db8::1"), "[2001:db8::1]");
        assert_eq!(uri_host("sip.example.com"), "sip.example.com");
    }
}
