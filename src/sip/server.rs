//! What the gateway does with each incoming SIP request: one task per server transaction.
//!
//! OPTIONS is answered (keep-alive probes, monitoring); REGISTER goes through digest
//! authentication (RFC 8760), the brute-force lockout and the registrar's rules, and the
//! bindings are stored. Authentication failures look the same whether the extension
//! exists or not, so a scanner cannot enumerate extensions.
//!
//! Load is refused early, never suffered: a new INVITE past the bound on calls in set-up
//! ([`CallsInSetup`]) and a REGISTER past `register_slots` get 503 with `Retry-After`
//! before any lookup, so what was admitted finishes at full speed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::transaction::Transaction;
use tokio_util::sync::CancellationToken;

use rsipstack::sip::{HeadersExt as _, Transport};
use rsipstack::transport::{SipAddr, SipConnection};

use super::admission::setup::{CallsInSetup, SetupTicket};
use super::admission::{self, MergeTracker, Refusal};
use super::b2bua::B2bua;
use super::digest::{self, Ha1Pair, NONCE_MAX_AGE_MS, NonceKey, Verdict};
use super::endpoint::ALLOW;
use super::lockout::{FailureOutcome, Lockout, LockoutPolicy};
use super::registrar::{self, Binding, Policy, RegisterError};
use super::trunks;
use crate::crm::model::{Millis, UserId};
use crate::store::{RegistrationRecord, Store, StoreError, TrunkRecord, now_ms};

/// Shared by every transaction task.
pub struct Registrar {
    pub store: Store,
    pub realm: String,
    /// Offered in this order (most preferred first) to who has no order of their own (a
    /// user's `sip_digest`, a PBX trunk's profile).
    pub algorithms: Vec<digest::Algorithm>,
    /// For the digest order of PBX trunks registering to us.
    pub profiles: Arc<super::profiles::Profiles>,
    pub nonce_key: NonceKey,
    pub policy: Policy,
    pub lockout: Mutex<Lockout>,
    /// The sent-by addresses of our own Via headers, for loop detection (482).
    pub own_addresses: Vec<SocketAddr>,
    /// The SIP proxy in front of several nodes (`--sip-proxy`): what it relays is read
    /// as coming from the sender below its Via.
    pub sip_proxy: Option<SocketAddr>,
    pub merges: Mutex<MergeTracker>,
    /// Routes trunks' INVITEs; without it a call gets 480.
    pub b2bua: Option<Arc<B2bua>>,
    /// Transactions one source may have in progress (see [`MAX_IN_FLIGHT_PER_SOURCE`]).
    pub max_in_flight_per_source: usize,
    /// REGISTERs being handled at once. Past it the registrar sheds load with 503 and
    /// Retry-After instead of queueing on the database until every phone retransmits.
    pub register_slots: Arc<tokio::sync::Semaphore>,
    /// Calls between their admitted INVITE and the caller's final answer; the endpoint
    /// shares it to see the answers.
    pub calls_in_setup: CallsInSetup,
}

/// How many REGISTERs are handled at once by default (`--max-registers-in-progress`);
/// the database, not the CPU, is the bound.
pub const MAX_CONCURRENT_REGISTERS: usize = 128;

/// Seconds a caller refused for overload is asked to wait: set-up work clears within
/// about a second, and a longer pause would turn a burst into a minute without calls.
pub(super) const OVERLOAD_RETRY_AFTER_S: &str = "1";

impl Registrar {
    pub fn new(store: Store, realm: String, algorithms: Vec<digest::Algorithm>) -> Self {
        Self {
            store,
            realm,
            algorithms,
            profiles: Arc::new(super::profiles::Profiles::builtin()),
            nonce_key: NonceKey::generate(),
            policy: Policy::default(),
            lockout: Mutex::new(Lockout::new(LockoutPolicy::default())),
            own_addresses: Vec::new(),
            sip_proxy: None,
            merges: Mutex::new(MergeTracker::default()),
            b2bua: None,
            max_in_flight_per_source: MAX_IN_FLIGHT_PER_SOURCE,
            register_slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REGISTERS)),
            calls_in_setup: CallsInSetup::new(super::admission::setup::DEFAULT_MAX_CALLS_IN_SETUP),
        }
    }
}

/// Who may register under a username, and the digest secret to check them with.
struct KnownRegistrant {
    /// `user` (an agent's extension) or `trunk` (a PBX with trunk credentials).
    owner_kind: &'static str,
    owner_id: String,
    ha1: Ha1Pair,
    /// Their own digest order, if they have one.
    digest: Option<Vec<digest::Algorithm>>,
}

impl Registrar {
    /// An employee's extension first; otherwise a PBX trunk with that username.
    async fn credentials(&self, username: &str) -> Result<Option<KnownRegistrant>, StoreError> {
        if let Some(s) = self.store.sip_credentials(username).await? {
            return Ok(Some(KnownRegistrant {
                owner_kind: "user",
                owner_id: s.user.to_string(),
                ha1: Ha1Pair {
                    realm: s.realm,
                    md5: s.ha1_md5,
                    sha256: s.ha1_sha256,
                },
                digest: s.sip_digest,
            }));
        }
        let Some(secret) = self.store.pbx_trunk_secret(username).await? else {
            return Ok(None);
        };
        // A PBX family that reads only the first challenge says so in its profile.
        let trunk = self.store.get_trunk(&secret.trunk).await?;
        let digest = self
            .profiles
            .get(&trunk.profile)
            .and_then(|profile| profile.digest.clone());
        Ok(Some(KnownRegistrant {
            owner_kind: "trunk",
            owner_id: secret.trunk.0,
            ha1: Ha1Pair::compute(username, &self.realm, &secret.password),
            digest,
        }))
    }

    /// The digest order to challenge `registrant` with (RFC 8760 §2.4: preferred first).
    fn offer(&self, registrant: Option<&KnownRegistrant>) -> Vec<digest::Algorithm> {
        digest::offer_order(
            registrant.and_then(|r| r.digest.as_deref()),
            &self.algorithms,
        )
        .to_vec()
    }

    /// The order for whoever claims `name` before they have shown credentials; unknown
    /// names get the gateway's order, exactly as a known one without a choice would.
    async fn offer_for(&self, name: Option<&str>) -> Vec<digest::Algorithm> {
        let known = match name {
            Some(name) => self.credentials(name).await.ok().flatten(),
            None => None,
        };
        self.offer(known.as_ref())
    }

    /// The trunk a request from `ip` comes from (T2), if any, from the in-memory
    /// snapshot: recognising a trunk costs no database round trip.
    fn trunk_from(&self, ip: IpAddr, now: Millis) -> Option<TrunkRecord> {
        let access = self.store.cached_trunk_access(now);
        let id = trunks::recognise(ip, &access).map(|t| t.id.clone())?;
        self.store.cached_trunk(&id)
    }
}

/// Transactions one source address may have in progress at once. Generous, because a
/// PBX trunk's ringing calls are all INVITE transactions from one address.
pub const MAX_IN_FLIGHT_PER_SOURCE: usize = 1_000;

/// Counts the transactions in progress per source address.
#[derive(Clone)]
pub struct InFlight {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Held while a transaction is handled; gives its place back when dropped.
pub struct InFlightSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Arc::default(),
        }
    }

    /// A slot for one more transaction from `ip`, or `None` past the limit.
    pub fn acquire(&self, ip: IpAddr) -> Option<InFlightSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(InFlightSlot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves incoming transactions until cancelled.
pub async fn serve(
    registrar: Arc<Registrar>,
    mut incoming: TransactionReceiver,
    cancel: CancellationToken,
    requests: tokio_util::task::TaskTracker,
) {
    let in_flight = InFlight::new(registrar.max_in_flight_per_source);
    loop {
        let transaction = tokio::select! {
            () = cancel.cancelled() => return,
            t = incoming.recv() => match t {
                Some(t) => t,
                None => return,
            },
        };
        let ip = source_of(&transaction, registrar.sip_proxy).map(|s| s.ip());
        let slot = match ip {
            Some(ip) => match in_flight.acquire(ip) {
                Some(slot) => Some(slot),
                None => {
                    // A flood from one source must not grow tasks and memory without
                    // bound (rsipstack's transaction queue has none): 503 and a pause.
                    metrics::counter!("leadline_sip_refused_total", "status" => "503",
                        "reason" => "per_source")
                    .increment(1);
                    requests.spawn(async move {
                        let mut tx = transaction;
                        let _ = tx
                            .reply_with(
                                StatusCode::ServiceUnavailable,
                                vec![Header::RetryAfter("5".into())],
                                None,
                            )
                            .await;
                    });
                    continue;
                }
            },
            None => None,
        };
        let registrar = registrar.clone();
        // Tracked: on shutdown the database closes only after requests in progress are
        // answered (else a REGISTER then would meet a closed pool and get a 500).
        requests.spawn(async move {
            let _slot = slot;
            let method = transaction.original.method().to_string();
            if let Err(err) = handle(registrar, transaction).await {
                tracing::debug!(%method, %err, "SIP transaction ended with an error");
            }
        });
    }
}

async fn handle(registrar: Arc<Registrar>, mut tx: Transaction) -> rsipstack::Result<()> {
    let source = source_of(&tx, registrar.sip_proxy);
    let admitted = admission::check(&tx.original, &registrar.own_addresses).and_then(|()| {
        registrar
            .merges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&tx.original, now_ms())
    });
    if let Err(refusal) = admitted {
        return refuse(&mut tx, &refusal).await;
    }
    // Requests inside a dialog (BYE, re-INVITE, UPDATE, ACK of a 2xx …) belong to the
    // call that owns the dialog; the dialog layer answers them and tells the call.
    if let Some(b2bua) = &registrar.b2bua
        && (has_to_tag(&tx.original) || *tx.original.method() == Method::Ack)
    {
        return match matching_dialog(b2bua, &tx).await {
            Some(mut dialog) => dialog.handle(&mut tx).await,
            None if *tx.original.method() == Method::Ack => Ok(()),
            None => tx.reply(StatusCode::CallTransactionDoesNotExist).await,
        };
    }
    match tx.original.method() {
        Method::Options => tx.reply_with(StatusCode::OK, allow_headers(), None).await,
        Method::Register => match registrar.register_slots.clone().try_acquire_owned() {
            Ok(_slot) => register(&registrar, &mut tx, source).await,
            Err(_) => {
                metrics::counter!("leadline_sip_refused_total", "status" => "503",
                    "reason" => "registers")
                .increment(1);
                tx.reply_with(
                    StatusCode::ServiceUnavailable,
                    vec![
                        Header::RetryAfter(OVERLOAD_RETRY_AFTER_S.into()),
                        Header::Warning(
                            "399 leadline \"too many registrations in progress\"".into(),
                        ),
                    ],
                    None,
                )
                .await
            }
        },
        Method::Invite => invite(&registrar, tx, source).await,
        Method::Ack => Ok(()),
        // CANCEL and BYE for transactions or dialogs we do not have (§9.2, §15.1.2).
        Method::Cancel | Method::Bye => tx.reply(StatusCode::CallTransactionDoesNotExist).await,
        _ => {
            tx.reply_with(StatusCode::NotImplemented, allow_headers(), None)
                .await
        }
    }
}

async fn refuse(tx: &mut Transaction, refusal: &Refusal) -> rsipstack::Result<()> {
    metrics::counter!("leadline_sip_refused_total", "status" => refusal.status().to_string(),
        "reason" => refusal.label())
    .increment(1);
    let mut headers = vec![Header::Warning(
        format!("399 leadline \"{}\"", refusal.reason()).into(),
    )];
    if let Refusal::BadExtension(tags) = refusal {
        headers.push(Header::Unsupported(tags.join(", ").into()));
    }
    tx.reply_with(StatusCode::from(refusal.status()), headers, None)
        .await
}

/// A new call: from a recognised trunk (T2) it is an incoming call for one of our
/// numbers; from anywhere else it is an agent's outgoing call, which must authenticate.
async fn invite(
    registrar: &Registrar,
    mut tx: Transaction,
    source: Option<SocketAddr>,
) -> rsipstack::Result<()> {
    // First, before any lookup: past the bound the caller hears 503 at once and the calls
    // already admitted keep the machine. The ticket travels with the call; the final
    // answer to this INVITE gives the place back (see `admission::setup`).
    let setup = match registrar.calls_in_setup.admit(&tx.key) {
        Ok(ticket) => ticket,
        Err(full) => return refuse_overload(&mut tx, &full).await,
    };
    // Debug builds record any query of the set-up path: the CRM intake, in a task of its
    // own, is the only database work before the first phone rings.
    let call_id = tx
        .original
        .call_id_header()
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    let _call_path = registrar.store.watch_call_path(&call_id);
    let now = now_ms();
    // A registered phone's own address is the phone's, whatever allowed_ips say.
    let from_phone =
        source.is_some_and(|s| registrar.store.cached_phone_source(&s.to_string(), now));
    let trunk = match source {
        Some(source) if !from_phone => registrar.trunk_from(source.ip(), now),
        _ => None,
    };
    let Some(trunk) = trunk else {
        return agent_call(registrar, tx, source, setup).await;
    };
    let Some(b2bua) = registrar.b2bua.clone() else {
        return tx.reply(StatusCode::TemporarilyUnavailable).await;
    };
    // The call lives on in its own task: this transaction's in-flight slot is freed now,
    // or a carrier's long calls would use up its address's slots and its BYEs get 503.
    tokio::spawn(async move {
        let _call_path = b2bua.store.watch_call_path(&call_id);
        let _setup = setup;
        if let Err(err) = b2bua.incoming(tx, trunk).await {
            tracing::warn!(%err, "call ended with an error");
        }
    });
    Ok(())
}

/// 503 for a new call past the bound on calls in set-up.
async fn refuse_overload(
    tx: &mut Transaction,
    full: &super::admission::setup::Full,
) -> rsipstack::Result<()> {
    metrics::counter!("leadline_sip_refused_total", "status" => "503", "reason" => "overload")
        .increment(1);
    tracing::debug!(%full, "new call refused: overload");
    tx.reply_with(
        StatusCode::ServiceUnavailable,
        vec![
            Header::RetryAfter(OVERLOAD_RETRY_AFTER_S.into()),
            Header::Warning("399 leadline \"too many calls in set-up\"".into()),
        ],
        None,
    )
    .await
}

/// The dialog an in-dialog request belongs to. A phone may send its first request (a
/// REFER, a BYE) the moment it has our ACK, a little before the dialog layer files the
/// confirmed dialog under its final id: a miss is looked up again for a short while
/// before it earns a 481, but only while a dialog we set up shares the request's Call-ID
/// (the only way that race happens). Anything else gets its 481 at once.
async fn matching_dialog(
    b2bua: &B2bua,
    tx: &Transaction,
) -> Option<rsipstack::dialog::dialog::Dialog> {
    const GRACE: Duration = Duration::from_millis(1000);
    const STEP: Duration = Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + GRACE;
    let mut may_be_filing = None;
    loop {
        if let Some(dialog) = b2bua.dialog_of(tx) {
            return Some(dialog);
        }
        let filing = *may_be_filing.get_or_insert_with(|| {
            miss_may_be_filing(tx.original.method(), || call_id_in_progress(b2bua, tx))
        });
        if !filing || tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(STEP).await;
    }
}

/// Whether a request that matched no dialog may match one a moment later: never an ACK
/// (it cannot be answered, and the transaction layer routes the ACK of a 2xx itself),
/// else only when a dialog we set up shares its Call-ID.
fn miss_may_be_filing(method: &Method, call_id_in_progress: impl FnOnce() -> bool) -> bool {
    *method != Method::Ack && call_id_in_progress()
}

/// Whether a dialog we started as the calling side (an agent's leg, the carrier's leg of
/// an outgoing call) has the request's Call-ID. One pass over the dialogs, only on a miss.
fn call_id_in_progress(b2bua: &B2bua, tx: &Transaction) -> bool {
    tx.original.call_id_header().is_ok_and(|call_id| {
        !b2bua
            .dialogs
            .get_client_dialog_by_call_id(call_id.value())
            .is_empty()
    })
}

/// The user part of From: who an agent's call claims to come from.
fn from_user(request: &rsipstack::sip::Request) -> Option<String> {
    use rsipstack::sip::headers::untyped::ToTypedHeader as _;
    let from = request.from_header().ok()?.typed().ok()?;
    from.uri.user().map(str::to_owned)
}

fn has_to_tag(request: &rsipstack::sip::Request) -> bool {
    use rsipstack::sip::headers::untyped::ToTypedHeader as _;
    request
        .to_header()
        .ok()
        .and_then(|to| to.typed().ok())
        .is_some_and(|to| to.tag().is_some())
}

fn allow_headers() -> Vec<Header> {
    vec![
        Header::Allow(ALLOW.join(", ").into()),
        Header::Accept("application/sdp".into()),
    ]
}

/// Where the request came from: the transport's `received`/`rport` marks in the top Via
/// (RFC 3581), which the endpoint adds for every message it receives. A request the
/// proxy relayed came from the sender whose Via is below the proxy's, where the proxy
/// marked the sender's address the same way: trunks are told apart, phones' bindings and
/// lockouts keyed, by that address and not by the proxy's.
fn source_of(tx: &Transaction, proxy: Option<SocketAddr>) -> Option<SocketAddr> {
    let mut vias = tx.original.headers.iter().filter_map(|h| match h {
        Header::Via(via) => Some(via),
        _ => None,
    });
    let top = via_source(vias.next()?)?;
    match proxy {
        Some(proxy) if top == proxy => vias.next().and_then(via_source).or(Some(top)),
        _ => Some(top),
    }
}

fn via_source(via: &rsipstack::sip::headers::Via) -> Option<SocketAddr> {
    let (transport, host) = SipConnection::parse_target_from_via(via).ok()?;
    SipAddr {
        r#type: Some(transport),
        addr: host,
    }
    .get_socketaddr()
    .ok()
}

async fn register(
    registrar: &Registrar,
    tx: &mut Transaction,
    source: Option<SocketAddr>,
) -> rsipstack::Result<()> {
    let now = now_ms();
    let ip: Option<IpAddr> = source.map(|s| s.ip());
    if let Some(ip) = ip
        && registrar
            .lockout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_banned(ip, now)
    {
        metrics::counter!("leadline_sip_auth_refused_total", "reason" => "locked_out").increment(1);
        return tx.reply(StatusCode::Forbidden).await;
    }
    let Some(source) = source else {
        return tx.reply(StatusCode::BadRequest).await;
    };
    let transport = match transport_name(tx).as_str() {
        "tls" => Transport::Tls,
        "tcp" => Transport::Tcp,
        _ => Transport::Udp,
    };
    let request = match registrar::register_request(&tx.original, source, transport) {
        Ok(request) => request,
        Err(err) => return reply_error(tx, &err).await,
    };

    let known = match authenticate(registrar, tx, ip, now, Some(&request.aor)).await {
        Authenticated::Known(known) => known,
        Authenticated::Answered(result) => return result,
    };

    let existing = match registrar.store.bindings(&request.aor, now).await {
        Ok(rows) => rows
            .into_iter()
            .map(binding_from_record)
            .collect::<Vec<_>>(),
        Err(err) => {
            tracing::error!(%err, "cannot read bindings");
            return tx.reply(StatusCode::ServerInternalError).await;
        }
    };
    let outcome = match registrar::apply_register(&existing, &request, now, &registrar.policy) {
        Ok(outcome) => outcome,
        Err(err) => return reply_error(tx, &err).await,
    };
    let records: Vec<RegistrationRecord> = outcome
        .upsert
        .iter()
        .map(|b| record_from_binding(b, known.owner_kind, &known.owner_id))
        .collect();
    if let Err(err) = registrar
        .store
        .save_bindings(&request.aor, &records, &outcome.remove)
        .await
    {
        tracing::error!(%err, "cannot store bindings");
        return tx.reply(StatusCode::ServerInternalError).await;
    }
    metrics::counter!("leadline_sip_registrations_total").increment(1);
    let contacts: Vec<Header> = outcome
        .current
        .iter()
        .map(|b| Header::Contact(b.contact_value(now).into()))
        .collect();
    let mut headers = contacts;
    headers.push(Header::Date(
        chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string()
            .into(),
    ));
    tx.reply_with(StatusCode::OK, headers, None).await
}

/// A request the registrar's rules refuse: the status they name, the reason in a Warning.
async fn reply_error(tx: &mut Transaction, err: &RegisterError) -> rsipstack::Result<()> {
    let mut headers = vec![Header::Warning(format!("399 leadline \"{err}\"").into())];
    if let RegisterError::IntervalTooBrief { min_expires } = err {
        headers.push(Header::MinExpires(min_expires.to_string().into()));
    }
    tx.reply_with(StatusCode::from(err.status_code()), headers, None)
        .await
}

/// Where digest authentication of a request left it.
enum Authenticated {
    Known(KnownRegistrant),
    /// A challenge or a refusal was sent.
    Answered(rsipstack::Result<()>),
}

/// Digest authentication of a REGISTER (`Authorization`, 401) or of an agent's INVITE
/// (`Proxy-Authorization`, 407), with the lockout. `aor`: the identity the credentials
/// must be for (a REGISTER's address of record).
async fn authenticate(
    registrar: &Registrar,
    tx: &mut Transaction,
    ip: Option<IpAddr>,
    now: i64,
    aor: Option<&str>,
) -> Authenticated {
    let proxy = *tx.original.method() != Method::Register;
    let authorization = tx.original.headers.iter().find_map(|h| match h {
        Header::Authorization(value) if !proxy => Some(value.value().to_owned()),
        Header::ProxyAuthorization(value) if proxy => Some(value.value().to_owned()),
        _ => None,
    });
    // Who the request claims to be (a REGISTER's address of record, a call's From) decides
    // the digest order until credentials name someone.
    let claimed = aor.map(str::to_owned).or_else(|| from_user(&tx.original));
    let Some(authorization) = authorization else {
        let order = registrar.offer_for(claimed.as_deref()).await;
        return Authenticated::Answered(challenge(registrar, tx, now, false, &order).await);
    };
    let Ok(credentials) = digest::parse_credentials(&authorization) else {
        let order = registrar.offer_for(claimed.as_deref()).await;
        return Authenticated::Answered(fail(registrar, tx, ip, now, &order).await);
    };
    // Credentials for another realm are no attempt at ours: challenge again, uncounted.
    // Decided before the lookup, or the lockout would count them only for unknown
    // extensions and so tell which extensions exist.
    if credentials.realm != registrar.realm {
        let order = registrar.offer_for(claimed.as_deref()).await;
        return Authenticated::Answered(challenge(registrar, tx, now, false, &order).await);
    }
    // The same answer for an unknown extension as for a wrong password: no enumeration.
    let known = match registrar.credentials(&credentials.username).await {
        Ok(known) => known.filter(|k| {
            aor.is_none_or(|aor| credentials.username == aor) && k.ha1.realm == registrar.realm
        }),
        Err(err) => {
            tracing::error!(%err, "cannot read SIP credentials");
            return Authenticated::Answered(tx.reply(StatusCode::ServerInternalError).await);
        }
    };
    let method = tx.original.method().to_string();
    let order = registrar.offer(known.as_ref());
    let verdict = match &known {
        Some(k) => digest::authenticate(
            &credentials,
            &method,
            &k.ha1,
            &registrar.nonce_key,
            now,
            NONCE_MAX_AGE_MS,
        ),
        None => Verdict::BadResponse,
    };
    match (verdict, known) {
        (Verdict::Authorized, Some(known)) => {
            if let Some(ip) = ip {
                registrar
                    .lockout
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record_success(ip);
            }
            Authenticated::Known(known)
        }
        (Verdict::StaleNonce, _) => {
            Authenticated::Answered(challenge(registrar, tx, now, true, &order).await)
        }
        (Verdict::OtherRealm, _) => {
            Authenticated::Answered(challenge(registrar, tx, now, false, &order).await)
        }
        _ => Authenticated::Answered(fail(registrar, tx, ip, now, &order).await),
    }
}

/// An INVITE from a source that is no trunk: an agent's phone placing an outgoing call
/// which must authenticate like a REGISTER (407, RFC 3261 §22.3).
async fn agent_call(
    registrar: &Registrar,
    mut tx: Transaction,
    source: Option<SocketAddr>,
    setup: SetupTicket,
) -> rsipstack::Result<()> {
    let now = now_ms();
    let ip = source.map(|s| s.ip());
    if let Some(ip) = ip
        && registrar
            .lockout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_banned(ip, now)
    {
        metrics::counter!("leadline_sip_auth_refused_total", "reason" => "locked_out").increment(1);
        return tx.reply(StatusCode::Forbidden).await;
    }
    let known = match authenticate(registrar, &mut tx, ip, now, None).await {
        Authenticated::Known(known) => known,
        Authenticated::Answered(result) => return result,
    };
    let (Some(b2bua), "user") = (registrar.b2bua.clone(), known.owner_kind) else {
        // A PBX trunk's account places no calls through us this way.
        return tx.reply(StatusCode::Forbidden).await;
    };
    // As for incoming calls: the call outlives this transaction's in-flight slot.
    tokio::spawn(async move {
        let _setup = setup;
        if let Err(err) = b2bua.outgoing(tx, UserId(known.owner_id)).await {
            tracing::warn!(%err, "outgoing call ended with an error");
        }
    });
    Ok(())
}

async fn challenge(
    registrar: &Registrar,
    tx: &mut Transaction,
    now: i64,
    stale: bool,
    order: &[digest::Algorithm],
) -> rsipstack::Result<()> {
    let nonce = digest::issue_nonce(&registrar.nonce_key, &registrar.realm, now);
    // REGISTER is challenged by the registrar (401); a call by us as its proxy (407).
    let proxy = *tx.original.method() != Method::Register;
    let headers = order
        .iter()
        .map(|algorithm| {
            let value = digest::challenge(&registrar.realm, &nonce, *algorithm, stale);
            if proxy {
                Header::ProxyAuthenticate(value.into())
            } else {
                Header::WwwAuthenticate(value.into())
            }
        })
        .collect();
    let status = if proxy {
        StatusCode::ProxyAuthenticationRequired
    } else {
        StatusCode::Unauthorized
    };
    tx.reply_with(status, headers, None).await
}

/// A failed authentication: counted per source; past the limit the source is refused.
async fn fail(
    registrar: &Registrar,
    tx: &mut Transaction,
    ip: Option<IpAddr>,
    now: i64,
    order: &[digest::Algorithm],
) -> rsipstack::Result<()> {
    metrics::counter!("leadline_sip_auth_failures_total").increment(1);
    if let Some(ip) = ip {
        let outcome = registrar
            .lockout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_failure(ip, now);
        if matches!(outcome, FailureOutcome::Banned) {
            tracing::warn!(%ip, "too many failed SIP authentications: source locked out");
            metrics::counter!("leadline_sip_lockouts_total").increment(1);
            return tx.reply(StatusCode::Forbidden).await;
        }
    }
    challenge(registrar, tx, now, false, order).await
}

fn transport_name(tx: &Transaction) -> String {
    match &tx.connection {
        Some(SipConnection::Tls(_)) => "tls".to_owned(),
        Some(c) if c.is_reliable() => "tcp".to_owned(),
        _ => "udp".to_owned(),
    }
}

fn binding_from_record(r: RegistrationRecord) -> Binding {
    Binding {
        aor: r.aor,
        contact: r.contact,
        expires_at: r.expires_at,
        call_id: r.call_id,
        cseq: u32::try_from(r.cseq).unwrap_or(0),
        q: r.q.as_deref().and_then(|q| q.parse().ok()),
        instance: r.instance,
        user_agent: r.user_agent,
        received: r.source,
        transport: r.transport,
        path: r.path,
    }
}

fn record_from_binding(b: &Binding, owner_kind: &str, owner_id: &str) -> RegistrationRecord {
    RegistrationRecord {
        aor: b.aor.clone(),
        owner_kind: owner_kind.to_owned(),
        owner_id: owner_id.to_owned(),
        contact: b.contact.clone(),
        expires_at: b.expires_at,
        call_id: b.call_id.clone(),
        cseq: i64::from(b.cseq),
        q: b.q.map(|q| q.to_string()),
        instance: b.instance.clone(),
        user_agent: b.user_agent.clone(),
        transport: b.transport.to_ascii_lowercase(),
        source: b.received.clone(),
        path: b.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-dialog request no dialog of ours matches waits for one being filed only when
    /// a dialog we set up has its Call-ID; a stranger's (RFC 4475's unknown dialog) gets
    /// its 481 at once, and an ACK is never waited for.
    #[test]
    fn an_unknown_dialog_is_481_at_once_unless_its_call_id_is_ours() {
        let cases = [
            (Method::Invite, false, false),
            (Method::Bye, false, false),
            (Method::Refer, true, true),
            (Method::Bye, true, true),
            (Method::Ack, true, false),
        ];
        for (method, ours, waits) in cases {
            assert_eq!(
                miss_may_be_filing(&method, || ours),
                waits,
                "{method} (Call-ID ours: {ours})"
            );
        }
    }

    #[test]
    fn in_flight_transactions_are_bounded_per_source_and_released() {
        let in_flight = InFlight::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = in_flight.acquire(a).unwrap();
        let _second = in_flight.acquire(a).unwrap();
        assert!(
            in_flight.acquire(a).is_none(),
            "a third from one source waits"
        );
        assert!(
            in_flight.acquire(b).is_some(),
            "other sources are not affected"
        );
        drop(first);
        assert!(
            in_flight.acquire(a).is_some(),
            "a finished one frees its place"
        );
    }
}
