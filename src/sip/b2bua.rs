//! The B2BUA: turns an INVITE from a trunk into a routed call (T1–T13).
//!
//! One task owns each call: the caller's dialog (the inbound leg; for a click-to-call the
//! leg the gateway placed to the employee's phone, `dial`), one outgoing dialog per
//! rung device, the ringing state ([`super::router::Ringing`]) and the call's CRM events.
//! rsipstack's dialog layer keeps the dialogs (tags, CSeq, route sets, ACK, CANCEL) and
//! reports their changes on the call's channel; this module decides and relays. The SDP
//! passes through untouched: media flows between the carrier and the agent's phone.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, HeadersExt as _, Method, Response, StatusCode, Transport, Uri};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::identity;
use super::profiles::Profiles;
use super::router::{self, Device, LegId, RingAction, RingEvent, Ringing, Unanswered};
use super::session_timer;
use crate::crm::intake::NumberSettings;
use crate::crm::model::{CallEventKind, CallOutcome, Direction, UserId};
use crate::events::{CallUpdate, EventBus, LiveCalls};
use crate::media::Side;
use crate::store::{CallEvent, CallLeg, EventAnswer, Store, StoreError, TrunkRecord, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum B2buaError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Boxed: rsipstack's error is large and this one travels through every call path.
    #[error("SIP: {0}")]
    Sip(Box<rsipstack::Error>),
    #[error("SIP message: {0}")]
    Message(#[from] rsipstack::sip::Error),
    #[error("{0}")]
    Endpoint(Box<crate::sip::endpoint::EndpointError>),
}

mod closed;
mod dial;
mod legs;
mod media;
mod outgoing;
mod talk;
mod transfer;

pub use dial::{DialError, DialOrder, Dialer};
use legs::{leg_state, snapshot};
use media::CallMedia;
pub use media::{GREETINGS_DIR, RECORDINGS_DIR};
use outgoing::CarrierLeg;
use transfer::Transferred;

impl From<crate::sip::endpoint::EndpointError> for B2buaError {
    fn from(err: crate::sip::endpoint::EndpointError) -> Self {
        B2buaError::Endpoint(Box::new(err))
    }
}

impl From<rsipstack::Error> for B2buaError {
    fn from(err: rsipstack::Error) -> Self {
        B2buaError::Sip(Box::new(err))
    }
}

/// What every call needs; shared.
pub struct B2bua {
    pub store: Store,
    pub dialogs: Arc<DialogLayer>,
    pub profiles: Arc<Profiles>,
    /// Our SIP address: the Contact of both legs.
    pub local: SocketAddr,
    /// How long the CRM lookup and intake may hold up routing.
    pub lookup_budget: Duration,
    /// Base of the API URLs put in `Call-Info` (`http://host:port`).
    pub api_base: String,
    /// Where the call window learns about the call.
    pub events: EventBus,
    /// Legs of the calls ringing or talking now.
    pub live: LiveCalls,
    /// Our TCP connections, for legs to phones registered over TCP.
    pub endpoint: crate::sip::endpoint::EndpointHandle,
    /// Dialogs of legs sent down our own TCP flows: rsipstack's dialog layer files only
    /// the dialogs it set up itself.
    pub own_dialogs: std::sync::Mutex<HashMap<String, InviteDialog>>,
    /// Calls in the talking phase by the Call-ID of each of their dialogs: a consultation
    /// transfer finds the call whose dialog its `Replaces` names here.
    pub(crate) consults:
        std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<transfer::Handover>>>,
    /// The media relay; `None` runs every call with its media between the parties.
    pub media: Option<Arc<crate::media::MediaEngine>>,
    /// Where recordings and greetings live.
    pub data_dir: std::path::PathBuf,
}

/// A leg's final answer, from the task awaiting its INVITE transaction.
struct LegDone {
    leg: LegId,
    response: Option<Response>,
}

impl B2bua {
    /// Takes an INVITE from `trunk`. Returns once the call has ended.
    pub async fn incoming(
        self: Arc<Self>,
        mut tx: Transaction,
        trunk: TrunkRecord,
    ) -> Result<(), B2buaError> {
        let received = std::time::Instant::now();
        let Some(profile) = self
            .profiles
            .get(&trunk.profile)
            .or_else(|| self.profiles.get("generic"))
            .cloned()
        else {
            tx.reply(StatusCode::ServerInternalError).await?;
            return Ok(());
        };
        let request = tx.original.clone();
        let Some(number) = self.number_called(&request, &profile).await? else {
            let warning = Header::Warning("399 leadline \"not a configured number\"".into());
            tx.reply_with(StatusCode::NotFound, vec![warning], None)
                .await?;
            return Ok(());
        };
        let session_interval_s = match session_timer::negotiate(
            header_value(&request, &["session-expires", "x"]).as_deref(),
            header_value(&request, &["min-se"]).as_deref(),
            lists_option(&request, "timer"),
        ) {
            session_timer::Negotiated::None => None,
            session_timer::Negotiated::CallerRefreshes { interval_s } => Some(interval_s),
            session_timer::Negotiated::TooSmall { min_se_s } => {
                let min_se = Header::Other("Min-SE".into(), min_se_s.to_string());
                tx.reply_with(StatusCode::from(422), vec![min_se], None)
                    .await?;
                return Ok(());
            }
        };
        let caller = identity::caller(&request, &profile);
        let call_id = request.call_id_header()?.value().to_owned();
        let span = tracing::info_span!("call", %call_id, number = %number.number);
        let media_settings = self.store.cached_number_media(&number.id);
        let session = match self.media_session(media_settings.media_relay || trunk.media_relay) {
            Ok(session) => session,
            Err(status) => {
                let warning = Header::Warning("399 leadline \"no free media ports\"".into());
                tx.reply_with(status, vec![warning], None).await?;
                return Ok(());
            }
        };

        let (inbound, state_sender, states) = self.take_caller(tx)?;

        let customer = caller
            .number
            .clone()
            .unwrap_or_else(|| "anonymous".to_owned());
        let started = now_ms();
        let ringing_event = CallEvent {
            call_id: call_id.clone(),
            event: CallEventKind::Ringing,
            direction: Direction::Incoming,
            from: customer.clone(),
            to: number.number.clone(),
            user: None,
            outcome: None,
            at: started,
        };
        let (call_record, answer, late_intake) =
            self.intake_within_budget(ringing_event, &number).await;
        let order = answer.route.clone();
        let devices = self.devices(&order).await?;
        let plan = router::plan(&order, &devices, number.ring_timeout_s);
        let shown = self
            .shown_caller(&answer, caller.display_name.as_deref(), &customer)
            .await;

        let call = Call {
            b2bua: self.clone(),
            call_record,
            call_id,
            customer,
            number: Some(number),
            inbound,
            offer: request.body.clone(),
            content_type: content_type(&request.headers),
            plan,
            shown,
            state_sender,
            book: CallBook::default(),
            direction: Direction::Incoming,
            from_host: self.local.to_string(),
            credential: None,
            received,
            session_interval_s,
            late_intake: tokio::sync::Mutex::new(late_intake),
            media: CallMedia {
                session,
                settings: media_settings,
                recording: Default::default(),
            },
            dialled: false,
        };
        call.run(states).instrument(span).await;
        Ok(())
    }

    /// Our number the INVITE is for: the profile's reading first, then the other one.
    /// From the in-memory configuration: no database round trip (async and fallible
    /// only to keep its callers as they are).
    async fn number_called(
        &self,
        request: &rsipstack::sip::Request,
        profile: &super::profiles::Profile,
    ) -> Result<Option<NumberSettings>, StoreError> {
        let party = identity::called_party(request, profile);
        let candidates = [
            identity::called(request, profile),
            party.dialled,
            party.original,
        ];
        Ok(candidates
            .into_iter()
            .flatten()
            .find_map(|candidate| self.store.cached_number(&candidate)))
    }

    /// The intake for the opening event, waited for at most the lookup budget. Past it
    /// the call rings the number's queue and the intake completes in the background:
    /// a slow database never drops a call.
    async fn intake_within_budget(
        &self,
        event: CallEvent,
        number: &NumberSettings,
    ) -> (
        Option<String>,
        EventAnswer,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        let store = self.store.clone();
        let mut intake = tokio::spawn(async move { store.apply_call_event(&event).await });
        match tokio::time::timeout(self.lookup_budget, &mut intake).await {
            Ok(Ok(Ok(outcome))) => (Some(outcome.call.id.to_string()), outcome.answer, None),
            Ok(Ok(Err(err))) => {
                tracing::error!(%err, "call intake failed; routing by the queue");
                (None, self.queue_answer(number).await, None)
            }
            Ok(Err(err)) => {
                tracing::error!(%err, "call intake task failed; routing by the queue");
                (None, self.queue_answer(number).await, None)
            }
            Err(_) => {
                metrics::counter!("leadline_call_lookup_deadline_missed_total").increment(1);
                tracing::warn!(
                    budget_ms = self.lookup_budget.as_millis() as u64,
                    "CRM lookup past its budget; routing by the queue, CRM link completes later"
                );
                // The call's later events wait for this: an `answered` or `ended` applied
                // before the opening event has written the call would find no call.
                let late = tokio::spawn(async move {
                    if let Ok(Err(err)) = intake.await {
                        tracing::error!(%err, "late call intake failed");
                    }
                });
                (None, self.queue_answer(number).await, Some(late))
            }
        }
    }

    /// The queue's members as the route when the intake cannot say.
    async fn queue_answer(&self, number: &NumberSettings) -> EventAnswer {
        let route = match &number.queue {
            Some(queue) => self.store.cached_queue_members(queue).unwrap_or_default(),
            None => Vec::new(),
        };
        EventAnswer {
            route,
            ring_timeout_s: number.ring_timeout_s,
            ..EventAnswer::default()
        }
    }

    /// The registered devices of each employee in the order, from the in-memory bindings.
    async fn devices(&self, order: &[UserId]) -> Result<HashMap<UserId, Vec<Device>>, StoreError> {
        let now = now_ms();
        let mut devices = HashMap::new();
        for user in order {
            if devices.contains_key(user) {
                continue;
            }
            let bindings = self.store.cached_user_bindings(user, now);
            devices.insert(
                user.clone(),
                bindings
                    .into_iter()
                    .map(|b| Device {
                        contact: b.contact,
                        transport: b.transport,
                        source: b.source,
                        q: b.q.and_then(|q| q.parse().ok()),
                    })
                    .collect(),
            );
        }
        Ok(devices)
    }

    /// What the agent's phone shows: the CRM's name for the caller and
    /// the entity's API URL, as the intake's answer carries them.
    async fn shown_caller(
        &self,
        answer: &EventAnswer,
        display_name: Option<&str>,
        customer: &str,
    ) -> Shown {
        let entity = answer.shown_entity();
        let responsible = answer
            .shown
            .as_ref()
            .and_then(|s| s.responsible.clone())
            .or_else(|| answer.matches.first().and_then(|m| m.responsible.clone()));
        let name = answer.shown.as_ref().map(|s| s.name.clone());
        Shown {
            caller_id: None,
            entity: entity.as_ref().map(ToString::to_string),
            responsible,
            name: name
                .or_else(|| display_name.map(str::to_owned))
                .filter(|n| !n.trim().is_empty()),
            info_url: entity.map(|e| format!("{}/api/v1/{}s/{}", self.api_base, e.kind, e.id)),
            number: customer.to_owned(),
        }
    }

    /// The caller's side of a new call: its dialog, and the channel on which every
    /// dialog of the call reports. The dialog answers 100 Trying at once and then absorbs
    /// the caller's ACK or CANCEL on the INVITE transaction.
    fn take_caller(
        &self,
        mut tx: Transaction,
    ) -> Result<
        (
            InviteDialog,
            rsipstack::dialog::dialog::DialogStateSender,
            DialogStateReceiver,
        ),
        B2buaError,
    > {
        let (state_sender, states) = self.dialogs.new_dialog_state_channel();
        let inbound = self.dialogs.get_or_create_server_invite(
            &tx,
            state_sender.clone(),
            None,
            Some(self.contact_uri()),
        )?;
        let mut server_side = inbound.clone();
        tokio::spawn(async move {
            let _ = server_side.handle(&mut tx).await;
        });
        Ok((inbound, state_sender, states))
    }

    fn consults_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<transfer::Handover>>> {
        self.consults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn own_dialogs_insert(&self, id: String, dialog: InviteDialog) {
        self.own_dialogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, dialog);
    }

    fn own_dialogs_remove(&self, id: &str) {
        self.own_dialogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The dialog an in-dialog request belongs to, ours or the dialog layer's.
    pub fn dialog_of(&self, tx: &Transaction) -> Option<rsipstack::dialog::dialog::Dialog> {
        if let Some(dialog) = self.dialogs.match_dialog(tx) {
            return Some(dialog);
        }
        let id = rsipstack::dialog::DialogId::try_from(tx).ok()?.to_string();
        self.own_dialogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .map(rsipstack::dialog::dialog::Dialog::Invite)
    }

    /// Forgets a dialog of a call that ended.
    fn forget_dialog(&self, id: &rsipstack::dialog::DialogId) {
        self.dialogs.remove_dialog(id);
        self.own_dialogs_remove(&id.to_string());
    }

    fn contact_uri(&self) -> Uri {
        Uri::try_from(format!("sip:leadline@{}", self.local).as_str())
            .unwrap_or_else(|_| Uri::default())
    }
}

/// The caller as the agent's phone and call window show it.
struct Shown {
    /// The From user part, when it is not the customer's number (our caller ID out).
    caller_id: Option<String>,
    entity: Option<String>,
    responsible: Option<UserId>,
    name: Option<String>,
    info_url: Option<String>,
    number: String,
}

/// One call, owned by its task.
struct Call {
    b2bua: Arc<B2bua>,
    /// The call log row, when the intake answered within its budget.
    call_record: Option<String>,
    call_id: String,
    customer: String,
    /// Our number the call is on; `None` for a call between two employees (no CRM).
    number: Option<NumberSettings>,
    inbound: InviteDialog,
    offer: Vec<u8>,
    content_type: Option<String>,
    plan: router::RoutePlan,
    shown: Shown,
    state_sender: rsipstack::dialog::dialog::DialogStateSender,
    /// What the call's task keeps while it runs.
    book: CallBook,
    direction: Direction,
    /// The host of the From URI on the outgoing legs (ours, or the carrier's domain).
    from_host: String,
    /// Answers the far side's digest challenge (a carrier trunk's account).
    credential: Option<rsipstack::dialog::authenticate::Credential>,
    /// When the caller's INVITE arrived: the post-dial delay we add is measured from it.
    received: std::time::Instant,
    /// The session timer agreed with the caller (RFC 4028), in seconds.
    session_interval_s: Option<u32>,
    /// The opening event's intake when it ran past the lookup budget: still writing.
    late_intake: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The relay, the recording and the number's media settings.
    media: CallMedia,
    /// Click-to-call: the gateway placed the caller's leg itself and the employee's phone
    /// answered it, so the customer's answer, busy or refusal goes to no INVITE of theirs.
    dialled: bool,
}

/// The running state of one call that is not its configuration.
#[derive(Default)]
struct CallBook {
    /// Every leg started, in order, with where it is (item 7).
    legs: std::sync::Mutex<Vec<(LegId, CallLeg)>>,
    /// Dialog changes that came while ringing but belong to the talking phase.
    deferred: std::sync::Mutex<Vec<DialogState>>,
    /// Dialogs of the phones transfers connected the caller to.
    transferred_dialogs: std::sync::Mutex<Vec<rsipstack::dialog::DialogId>>,
    /// The last SDP (content type, body) each dialog's party sent, by Call-ID: what a
    /// consultation transfer offers the party's new peer.
    sdp: Arc<SdpBook>,
    /// The dialog a consultation transfer took over from this call, and where its
    /// changes go now: it lives on in the other call.
    handed_over: std::sync::Mutex<
        Option<(
            rsipstack::dialog::DialogId,
            rsipstack::dialog::dialog::DialogStateSender,
        )>,
    >,
}

impl CallBook {
    fn note_sdp(&self, call_id: &str, headers: &rsipstack::sip::Headers, body: &[u8]) {
        note_sdp(&self.sdp, call_id, headers, body);
    }
}

/// The last SDP (content type, body) each party of a call sent, by its dialog's Call-ID.
type SdpBook = std::sync::Mutex<HashMap<String, (Option<String>, Vec<u8>)>>;

/// Keeps what a party last sent as SDP; messages without a body change nothing.
fn note_sdp(book: &SdpBook, call_id: &str, headers: &rsipstack::sip::Headers, body: &[u8]) {
    if body.is_empty() {
        return;
    }
    book.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(call_id.to_owned(), (content_type(headers), body.to_vec()));
}

/// How ringing ended.
enum Rung {
    /// A leg answered: its dialog and its 2xx.
    Answered {
        leg: LegId,
        dialog: InviteDialog,
        response: Response,
    },
    /// Nobody will talk.
    Unanswered(Unanswered),
    /// Nobody will answer and the caller is still waiting: the after-hours rule decides.
    Closed(crate::crm::hours::Closed),
}

impl Call {
    fn note_sdp(&self, call_id: &str, headers: &rsipstack::sip::Headers, body: &[u8]) {
        self.book.note_sdp(call_id, headers, body);
    }

    /// The Call-ID of the caller's dialog. A call that came in is logged under it; a
    /// click-to-call is logged under an id of ours, its caller's dialog being the leg the
    /// gateway placed to the employee's phone.
    fn caller_call_id(&self) -> String {
        self.inbound.id().call_id
    }

    async fn run(self, mut states: DialogStateReceiver) {
        if !self.offer.is_empty() {
            self.book
                .sdp
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    self.caller_call_id(),
                    (self.content_type.clone(), self.offer.clone()),
                );
        }
        // Working hours are for customers calling in, not for an employee's own call.
        let rung = if !self.dialled && self.closed_now() {
            Rung::Closed(crate::crm::hours::Closed::OutsideHours)
        } else {
            self.ring(&mut states).await
        };
        let ended_by = match rung {
            Rung::Closed(_) if self.forwards() => match self.forward(&mut states).await {
                Some(dialog) => {
                    let user = self.talk(&mut states, &dialog, None).await;
                    self.talked(user).await;
                    Some(dialog.id())
                }
                None => {
                    self.finish_legs().await;
                    self.event(CallEventKind::Ended, None, Some(CallOutcome::Missed))
                        .await;
                    self.finish_media().await;
                    self.publish("ended", Vec::new(), None, Some(CallOutcome::Missed));
                    None
                }
            },
            Rung::Closed(why) => {
                let message = self.closed(why, &mut states).await;
                self.finish_legs().await;
                self.event(CallEventKind::Ended, None, Some(CallOutcome::Missed))
                    .await;
                if let Err(err) = self
                    .b2bua
                    .store
                    .set_call_media(&self.call_id, None, message.as_ref())
                    .await
                {
                    tracing::error!(%err, "cannot keep the voicemail message");
                }
                self.finish_media().await;
                self.publish("ended", Vec::new(), None, Some(CallOutcome::Missed));
                metrics::counter!("leadline_calls_total", "outcome" => "missed").increment(1);
                None
            }
            Rung::Unanswered(why) => {
                let outcome = if self.dialled {
                    self.customer_unreached(why).await
                } else {
                    match why {
                        Unanswered::Missed => CallOutcome::Missed,
                        Unanswered::Busy => CallOutcome::Busy,
                        Unanswered::Cancelled => CallOutcome::Cancelled,
                    }
                };
                self.finish_legs().await;
                self.event(CallEventKind::Ended, None, Some(outcome)).await;
                self.finish_media().await;
                self.publish("ended", Vec::new(), None, Some(outcome));
                metrics::counter!("leadline_calls_total", "outcome" => outcome.as_str())
                    .increment(1);
                None
            }
            Rung::Answered {
                leg,
                dialog,
                response,
            } => {
                let user = self.plan.steps[leg.0].user.clone();
                self.note_sdp(&dialog.id().call_id, &response.headers, &response.body);
                let mut headers: Vec<Header> = content_type(&response.headers)
                    .map(|ct| vec![Header::ContentType(ct.into())])
                    .unwrap_or_default();
                if let Some(interval_s) = self.session_interval_s {
                    headers.extend(talk::session_timer_headers(interval_s));
                }
                let answer = self.sdp_for(Side::Callee, &response.body);
                if let Err(err) = self.inbound.accept(Some(headers), Some(answer)) {
                    tracing::warn!(%err, "cannot answer the caller; ending the agent's leg");
                    let _ = dialog.hangup().await;
                    self.finish_legs().await;
                    self.event(CallEventKind::Ended, None, Some(CallOutcome::Failed))
                        .await;
                    self.finish_media().await;
                    return;
                }
                self.media_answered();
                self.event(CallEventKind::Answered, Some(user.clone()), None)
                    .await;
                self.publish("answered", Vec::new(), Some(&user), None);
                metrics::counter!("leadline_calls_total", "outcome" => "answered").increment(1);
                let user = self.talk(&mut states, &dialog, Some(user.clone())).await;
                self.talked(user).await;
                Some(dialog.id())
            }
        };
        let handed_over = self
            .book
            .handed_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let kept = handed_over.as_ref().map(|(id, _)| id.clone());
        let forget = |id: rsipstack::dialog::DialogId| {
            if kept.as_ref() != Some(&id) {
                self.b2bua.forget_dialog(&id);
            }
        };
        forget(self.inbound.id());
        if let Some(id) = ended_by {
            forget(id);
        }
        // Phones a transfer connected: their dialogs are done too.
        let taken_over = std::mem::take(
            &mut *self
                .book
                .transferred_dialogs
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for id in taken_over {
            forget(id);
        }
        if let Some((id, to)) = handed_over {
            // The dialog still reports on this call's channel: passed on until it ends.
            tokio::spawn(async move {
                while let Some(state) = states.recv().await {
                    let ended = matches!(state, DialogState::Terminated(..));
                    if state.id().call_id != id.call_id {
                        continue;
                    }
                    if to.send(state).is_err() || ended {
                        break;
                    }
                }
            });
        }
        // What the dialog layer still holds once a call is over: a leak shows here.
        let own = self
            .b2bua
            .own_dialogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        metrics::gauge!("leadline_sip_dialogs").set((self.b2bua.dialogs.len() + own) as f64);
    }

    /// Rings the plan's steps until a leg answers or nobody will.
    async fn ring(&self, states: &mut DialogStateReceiver) -> Rung {
        let (done_sender, mut done) = mpsc::unbounded_channel::<LegDone>();
        let mut legs: HashMap<LegId, InviteDialog> = HashMap::new();
        let mut leg_by_call_id: HashMap<String, LegId> = HashMap::new();
        let mut answers: HashMap<LegId, Response> = HashMap::new();
        let mut step_deadline: Option<(usize, tokio::time::Instant)> = None;
        let (mut ringing, mut pending) = Ringing::start(&self.plan);
        let caller_call_id = self.caller_call_id();
        loop {
            for action in std::mem::take(&mut pending) {
                match action {
                    // A click-to-call told the call window when the employee's phones
                    // rang, and its set-up time includes their answering.
                    RingAction::StartStep(step) => {
                        if step == 0 && !self.dialled {
                            // Caller's INVITE in → first leg's INVITE out: what the
                            // gateway adds to the post-dial delay (lookup included).
                            metrics::histogram!("leadline_call_setup_seconds", "direction" => self.direction.as_str())
                                .record(self.received.elapsed().as_secs_f64());
                        }
                        if !self.dialled {
                            self.publish(
                                "ringing",
                                vec![self.plan.steps[step].user.clone()],
                                None,
                                None,
                            );
                        }
                        step_deadline = Some((
                            step,
                            tokio::time::Instant::now()
                                + Duration::from_millis(self.plan.ring_timeout_ms),
                        ));
                        for device in 0..self.plan.steps[step].devices.len() {
                            let leg = (step, device);
                            match self.start_leg(leg, &done_sender).await {
                                Ok(dialog) => {
                                    self.leg_started(leg);
                                    leg_by_call_id.insert(dialog.id().call_id.clone(), leg);
                                    legs.insert(leg, dialog);
                                }
                                Err(err) => {
                                    tracing::warn!(%err, "cannot start a leg");
                                    self.leg_started(leg);
                                    self.leg_ended(leg, "failed", Some(503));
                                    pending
                                        .extend(ringing.on(RingEvent::Failed { leg, status: 503 }));
                                }
                            }
                        }
                    }
                    RingAction::Cancel(cancelled) => {
                        for leg in cancelled {
                            self.leg_ended(leg, "cancelled", None);
                            if let Some(dialog) = legs.get(&leg).cloned() {
                                // CANCEL while early; a leg that answered meanwhile gets
                                // its 2xx ACKed and a BYE.
                                tokio::spawn(async move {
                                    let _ = dialog.hangup().await;
                                });
                            }
                        }
                    }
                    RingAction::RelayProgress { early_media, .. } => {
                        // Early media was relayed with its body when it arrived.
                        if !early_media {
                            let _ = self.inbound.ringing(None, None);
                        }
                    }
                    RingAction::Connect(leg) => {
                        if let (Some(dialog), Some(response)) =
                            (legs.get(&leg).cloned(), answers.remove(&leg))
                        {
                            return Rung::Answered {
                                leg,
                                dialog,
                                response,
                            };
                        }
                    }
                    RingAction::Reject { status, outcome } => {
                        if outcome != Unanswered::Cancelled
                            && !self.dialled
                            && self.rule_takes_over()
                        {
                            return Rung::Closed(crate::crm::hours::Closed::NobodyAnswered);
                        }
                        if outcome != Unanswered::Cancelled {
                            let _ = self.inbound.reject(Some(StatusCode::from(status)), None);
                        }
                        return Rung::Unanswered(outcome);
                    }
                }
            }
            let timer = step_timer(step_deadline);
            tokio::select! {
                () = timer => {
                    if let Some((step, _)) = step_deadline.take() {
                        self.step_unanswered(step);
                        pending.extend(ringing.on(RingEvent::StepTimedOut { step }));
                    }
                }
                Some(LegDone { leg, response }) = done.recv() => {
                    let status = response
                        .as_ref()
                        .map_or(408, |r| u16::from(r.status_code.clone()));
                    self.leg_ended(leg, leg_state(status), Some(status));
                    if (200..300).contains(&status) {
                        if let Some(response) = response {
                            answers.insert(leg, response);
                        }
                        pending.extend(ringing.on(RingEvent::Answered(leg)));
                    } else {
                        pending.extend(ringing.on(RingEvent::Failed { leg, status }));
                    }
                }
                Some(state) = states.recv() => match state {
                    DialogState::Early(id, response) => {
                        if let Some(leg) = leg_by_call_id.get(&id.call_id) {
                            let early_media = !response.body.is_empty();
                            let actions = ringing.on(RingEvent::Progress { leg: *leg, early_media });
                            if early_media && !actions.is_empty() {
                                let headers = content_type(&response.headers)
                                    .map(|ct| vec![Header::ContentType(ct.into())]);
                                let early = self.sdp_for(Side::Callee, &response.body);
                                let _ = self.inbound.ringing(headers, Some(early));
                            }
                            pending.extend(actions);
                        }
                    }
                    // The caller gave up: a CANCEL, or the BYE of an employee whose
                    // click-to-call still rings the customer.
                    DialogState::Terminated(id, reason)
                        if id.call_id == caller_call_id
                            && (self.dialled || matches!(reason, TerminatedReason::UacCancel)) =>
                    {
                        pending.extend(ringing.on(RingEvent::CallerCancelled));
                    }
                    // A REFER, re-INVITE or BYE from a phone that answered can arrive
                    // before its answer has been taken: kept for the talking phase.
                    other @ (DialogState::Refer(..)
                    | DialogState::Updated(..)
                    | DialogState::Terminated(..)) => {
                        self.book.deferred.lock().unwrap_or_else(|e| e.into_inner()).push(other);
                    }
                    _ => {}
                },
            }
        }
    }

    async fn start_leg(
        &self,
        leg: LegId,
        done: &mpsc::UnboundedSender<LegDone>,
    ) -> Result<InviteDialog, B2buaError> {
        let (dialog, handle) = self
            .invite_device(&self.plan.steps[leg.0].devices[leg.1])
            .await?;
        let done = done.clone();
        tokio::spawn(async move {
            let response = match handle.await {
                Ok(Ok((_, response))) => response,
                _ => None,
            };
            let _ = done.send(LegDone { leg, response });
        });
        Ok(dialog)
    }

    /// Sends the caller's INVITE on to one device: the CRM's name as the From display
    /// name, `Call-Info` with the entity's URL, the caller's SDP.
    async fn invite_device(
        &self,
        device: &Device,
    ) -> Result<
        (
            InviteDialog,
            tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
        ),
        B2buaError,
    > {
        let from_user = self
            .shown
            .caller_id
            .clone()
            .unwrap_or_else(|| caller_user(&self.shown.number));
        let caller = Uri::try_from(format!("sip:{from_user}@{}", self.from_host).as_str())?;
        let mut headers = Vec::new();
        if let Some(url) = &self.shown.info_url {
            headers.push(Header::Other(
                "Call-Info".into(),
                format!("<{url}>;purpose=info"),
            ));
        }
        let option = InviteOption {
            caller_display_name: self.shown.name.clone(),
            caller,
            callee: Uri::try_from(device.contact.as_str())?,
            destination: destination(device),
            content_type: self.content_type.clone(),
            offer: (!self.offer.is_empty()).then(|| self.sdp_for(Side::Caller, &self.offer)),
            contact: self.b2bua.contact_uri(),
            headers: Some(headers),
            credential: self.credential.clone(),
            ..InviteOption::default()
        };
        self.b2bua
            .send_invite(option, device, self.state_sender.clone())
            .await
    }
}

impl B2bua {
    /// Sends an INVITE to `device`, its dialog reporting on `states`; the handle ends
    /// with the INVITE's final answer.
    async fn send_invite(
        self: &Arc<Self>,
        option: InviteOption,
        device: &Device,
        states: rsipstack::dialog::dialog::DialogStateSender,
    ) -> Result<
        (
            InviteDialog,
            tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
        ),
        B2buaError,
    > {
        if device.transport == "tcp"
            && let Ok(peer) = device.source.parse::<SocketAddr>()
        {
            return self.invite_over_flow(option, peer, states).await;
        }
        Ok(self.dialogs.do_invite_async(option, states)?)
    }

    /// An INVITE to a phone registered over TCP goes down the connection it registered
    /// over (RFC 3261 §18.2.2, RFC 5626): behind NAT nothing else reaches it. rsipstack's
    /// `do_invite_async` would open a new connection, so this is its counterpart with the
    /// transaction bound to our flow; in-dialog requests then follow the same flow.
    async fn invite_over_flow(
        self: &Arc<Self>,
        option: InviteOption,
        peer: SocketAddr,
        states: rsipstack::dialog::dialog::DialogStateSender,
    ) -> Result<
        (
            InviteDialog,
            tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
        ),
        B2buaError,
    > {
        let flow = self.endpoint.tcp_flow(peer, Duration::from_secs(3)).await?;
        let (dialog, mut tx) = self.dialogs.create_client_invite_dialog(option, states)?;
        tx.connection = Some(flow.connection);
        let b2bua = self.clone();
        let early = dialog.id().to_string();
        b2bua.own_dialogs_insert(early.clone(), dialog.clone());
        let invite = dialog.clone();
        let handle = tokio::spawn(async move {
            let result = invite.process_invite(&mut tx).await;
            b2bua.own_dialogs_remove(&early);
            if let Ok((id, Some(response))) = &result
                && response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
            {
                b2bua.own_dialogs_insert(id.to_string(), invite.clone());
                // Drain the accepted transaction until it ends (RFC 6026), as rsipstack does.
                tokio::spawn(async move { while tx.receive().await.is_some() {} });
            }
            result
        });
        Ok((dialog, handle))
    }
}

/// Where requests to a device go: the address its REGISTER came from (it may be behind
/// NAT), over its transport.
fn destination(device: &Device) -> Option<SipAddr> {
    let transport = if device.transport == "tcp" {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    device
        .source
        .parse::<SocketAddr>()
        .ok()
        .map(|addr| SipAddr {
            r#type: Some(transport),
            addr: addr.into(),
        })
}

impl Call {
    /// Tells the call window.
    fn publish(
        &self,
        event: &str,
        ringing: Vec<UserId>,
        answered_by: Option<&UserId>,
        outcome: Option<CallOutcome>,
    ) {
        self.b2bua.events.publish(CallUpdate {
            event: event.to_owned(),
            call: self.call_record.clone(),
            call_id: self.call_id.clone(),
            direction: self.direction.to_string(),
            customer: self.customer.clone(),
            number: self
                .number
                .as_ref()
                .map(|n| n.number.clone())
                .unwrap_or_default(),
            entity: self.shown.entity.clone(),
            name: self.shown.name.clone(),
            responsible: self.shown.responsible.as_ref().map(ToString::to_string),
            ringing: ringing.into_iter().map(|u| u.to_string()).collect(),
            answered_by: answered_by.map(ToString::to_string),
            outcome: outcome.map(|o| o.to_string()),
            at: crate::store::rfc3339(now_ms()),
        });
    }

    /// The talking is over: the legs, the CRM's ended event, the media, the call window.
    async fn talked(&self, user: Option<UserId>) {
        self.finish_legs().await;
        self.event(
            CallEventKind::Ended,
            user.clone(),
            Some(CallOutcome::Answered),
        )
        .await;
        self.finish_media().await;
        self.publish(
            "ended",
            Vec::new(),
            user.as_ref(),
            Some(CallOutcome::Answered),
        );
    }

    /// Records a step of the call through the intake (idempotent per Call-ID and step).
    async fn event(&self, kind: CallEventKind, user: Option<UserId>, outcome: Option<CallOutcome>) {
        // A call between employees is no customer's call: nothing for the CRM.
        let Some(number) = &self.number else {
            return;
        };
        if let Some(late) = self.late_intake.lock().await.take()
            && tokio::time::timeout(LATE_INTAKE_WAIT, late).await.is_err()
        {
            tracing::error!(
                "the late call intake is still not done; recording the next step anyway"
            );
        }
        let (from, to) = match self.direction {
            Direction::Incoming => (self.customer.clone(), number.number.clone()),
            Direction::Outgoing => (number.number.clone(), self.customer.clone()),
        };
        let event = CallEvent {
            call_id: self.call_id.clone(),
            event: kind,
            direction: self.direction,
            from,
            to,
            user,
            outcome,
            at: now_ms(),
        };
        if let Err(err) = self.b2bua.store.apply_call_event(&event).await {
            tracing::error!(%err, event = %kind, "cannot record the call event");
        }
    }
}

/// The From user part of the agent's leg: the customer's number, `anonymous` if withheld.
fn caller_user(number: &str) -> String {
    let cleaned: String = number
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
        .collect();
    if cleaned.is_empty() {
        "anonymous".to_owned()
    } else {
        cleaned
    }
}

/// How long a call's later events wait for an opening intake that missed its budget.
const LATE_INTAKE_WAIT: Duration = Duration::from_secs(30);

/// The value of the first header with one of `names` (lower-case; compact forms too).
fn header_value(request: &rsipstack::sip::Request, names: &[&str]) -> Option<String> {
    request.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        names
            .contains(&name.trim().to_ascii_lowercase().as_str())
            .then(|| value.trim().to_owned())
    })
}

/// Whether `Supported` or `Require` lists an option tag (compact `k` too).
fn lists_option(request: &rsipstack::sip::Request, tag: &str) -> bool {
    request.headers.iter().any(|h| {
        let text = h.to_string();
        let Some((name, value)) = text.split_once(':') else {
            return false;
        };
        matches!(
            name.trim().to_ascii_lowercase().as_str(),
            "supported" | "k" | "require"
        ) && value.split(',').any(|t| t.trim().eq_ignore_ascii_case(tag))
    })
}

fn content_type(headers: &rsipstack::sip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::ContentType(ct) => Some(ct.value().to_owned()),
        _ => None,
    })
}

/// Fires when the ringing step's deadline passes; never while no step is timed.
async fn step_timer(deadline: Option<(usize, tokio::time::Instant)>) {
    match deadline {
        Some((_, at)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
