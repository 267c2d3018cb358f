//! The B2BUA: turns an INVITE from a trunk into a routed call (T1–T13).
//!
//! Each call is one task: a [`driver`] owning the call's machine ([`super::call`], which
//! decides everything from ringing to hang-up) and, by the machine's ids, the call's
//! rsipstack dialogs: the caller's (the inbound leg; for a click-to-call the leg the
//! gateway placed to the employee's phone, `dial`) and one per rung device, forward or
//! transfer target. rsipstack's dialog layer keeps the dialogs (tags, CSeq, route sets,
//! ACK, CANCEL) and reports their changes on the call's channel. This module sets a call
//! up (the number, the intake within its budget, the route plan, what the agents' phones
//! show) and sends its INVITEs; [`registry`] finds live calls for attended transfers.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
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

use super::call;
use super::identity;
use super::profiles::Profiles;
use super::router::{self, Device};
use super::session_timer;
use crate::crm::hours::{AfterHours, AfterHoursAction};
use crate::crm::intake::NumberSettings;
use crate::crm::model::{CallEventKind, CallOutcome, Direction, UserId};
use crate::crm::trust;
use crate::events::{CallUpdate, EventBus, LiveCalls};
use crate::media::Side;
use crate::store::{
    CallEvent, EventAnswer, Store, StoreError, StoredRecording, TrunkRecord, now_ms,
};

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

mod dial;
pub(crate) mod driver;
mod media;
mod outgoing;
pub mod registry;

pub use dial::{DialError, DialOrder, Dialer};
use driver::{CallSpec, Driver};
use media::CallMedia;
pub use media::{GREETINGS_DIR, MUSIC_DIR, RECORDINGS_DIR};

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

/// The longest voicemail message of a withheld caller sent to voicemail (T6) on a number
/// without an after-hours rule of its own.
const DEFAULT_VOICEMAIL_S: u32 = 120;

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
    /// Free agents and waiting callers.
    pub desk: crate::sip::queueing::Desk,
    /// This process among the nodes sharing the database.
    pub node: crate::cluster::NodeId,
    /// Our TCP connections, for legs to phones registered over TCP.
    pub endpoint: crate::sip::endpoint::EndpointHandle,
    /// Dialogs of legs sent down our own TCP flows: rsipstack's dialog layer files only
    /// the dialogs it set up itself.
    pub own_dialogs: std::sync::Mutex<HashMap<String, InviteDialog>>,
    /// The live calls by the Call-ID of each of their dialogs: a consultation transfer
    /// finds the call whose dialog its `Replaces` names there.
    pub calls: registry::Registry,
    /// The media relay; `None` runs every call with its media between the parties.
    pub media: Option<Arc<crate::media::MediaEngine>>,
    /// Where recordings and greetings live.
    pub data_dir: std::path::PathBuf,
    /// The SIP proxy in front of several nodes (`--sip-proxy`): every leg goes out
    /// through it. `None`: straight to the phone or carrier.
    pub sip_proxy: Option<SocketAddr>,
}

impl B2bua {
    /// Takes an INVITE from `trunk`. Returns once the call has ended.
    pub async fn incoming(
        self: Arc<Self>,
        mut tx: Transaction,
        trunk: TrunkRecord,
    ) -> Result<(), B2buaError> {
        let received = tokio::time::Instant::now();
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
        let verification = identity::verification(&request, &profile);
        let diverted_from = identity::called_party(&request, &profile).original;
        let span = tracing::info_span!("call", %call_id, number = %number.number,
            identity_header = verification.identity);
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
            diverted_from,
            verstat: verification.verstat.map(|v| v.as_str().to_owned()),
        };
        // T6: the rate limit never turns a caller away, so it is left to the intake.
        let verdict = trust::evaluate(
            &number.trust,
            &trust::TrustFacts {
                verstat: verification.verstat,
                anonymous: caller.number.is_none(),
                calls_last_hour: 0,
            },
        );
        if let trust::Handling::Reject(status) = verdict.handling {
            self.refuse_untrusted(tx, ringing_event, status)
                .instrument(span)
                .await?;
            return Ok(());
        }
        let media_settings = self.store.cached_number_media(&number.id);
        let session = match self.media_session(media_settings.media_relay || trunk.media_relay) {
            Ok(session) => session,
            Err(status) => {
                let warning = Header::Warning("399 leadline \"no free media ports\"".into());
                tx.reply_with(status, vec![warning], None).await?;
                return Ok(());
            }
        };
        // The caller's signalling transport decides whether it may use SRTP.
        if let Some(warning) = media::srtp_refusal(
            session.as_deref(),
            crate::sip::endpoint::is_tls(tx.connection.as_ref()),
            &request.body,
        ) {
            tx.reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                .await?;
            return Ok(());
        }

        let (inbound, state_sender, states) = self.take_caller(tx)?;

        let (call_record, answer, late_intake) =
            self.intake_within_budget(ringing_event, &number).await;
        let shown = self
            .shown_caller(&answer, caller.display_name.as_deref(), &customer)
            .await;
        // T5 is for a known customer: a lead this call just created has the queue's next
        // agent as its responsible, who is no more than the queue's turn.
        let known_responsible = answer.matches.first().and_then(|m| m.responsible.clone());
        let (mut plan, mut queue) = self.queue_plan(&number, &answer, known_responsible.as_ref());
        let mut after_hours = media_settings.after_hours.clone();
        if verdict.handling == trust::Handling::Voicemail {
            // T6: nobody rings, so the voicemail rule takes the caller straight away.
            plan = router::plan(&[], &HashMap::new(), number.ring_timeout_s);
            queue = None;
            after_hours = Some(AfterHours {
                action: AfterHoursAction::Voicemail,
                forward_to: None,
                max_message_s: after_hours.map_or(DEFAULT_VOICEMAIL_S, |rule| rule.max_message_s),
            });
        }

        let machine = call::Call::new(call::Setup {
            kind: call::Kind::Incoming,
            plan,
            phones: None,
            offer: call::Body {
                content_type: content_type(&request.headers),
                bytes: request.body.clone(),
            },
            session_interval_s,
            after_hours,
            recording: media_settings.recording && session.is_some(),
            intake_pending: late_intake.is_some(),
            received,
            queue,
        });
        let spec = CallSpec {
            call_record,
            call_id,
            customer,
            number: Some(number),
            employee: None,
            direction: Direction::Incoming,
            shown,
            phone_shown: None,
            from_host: self.local.to_string(),
            credential: None,
            media: CallMedia {
                session,
                settings: media_settings,
                recording: Default::default(),
            },
        };
        Driver::new(
            self.clone(),
            machine,
            spec,
            state_sender,
            Some(inbound),
            late_intake,
        )
        .run(states)
        .instrument(span)
        .await;
        Ok(())
    }

    /// T6: refuses a caller the number does not trust, and logs the call with its flag
    /// (opened and ended by one event: the intake keeps it out of the CRM).
    async fn refuse_untrusted(
        &self,
        mut tx: Transaction,
        opening: CallEvent,
        status: u16,
    ) -> Result<(), B2buaError> {
        let why = match status {
            trust::REJECT_ANONYMOUS => "anonymous callers are not accepted on this number",
            _ => "the carrier failed to verify the caller's number",
        };
        let warning = Header::Warning(format!("399 leadline \"{why}\"").into());
        tx.reply_with(StatusCode::from(status), vec![warning], None)
            .await?;
        let ended = CallEvent {
            event: CallEventKind::Ended,
            outcome: Some(CallOutcome::Failed),
            ..opening
        };
        if let Err(err) = self.store.open_call(&ended, &self.node).await {
            tracing::error!(%err, "cannot log the refused call");
        }
        Ok(())
    }

    /// Our number the INVITE is for: the number the caller dialled before a forward when
    /// it is ours, else the profile's reading, then the other one.
    /// From the in-memory configuration: no database round trip (async and fallible
    /// only to keep its callers as they are).
    async fn number_called(
        &self,
        request: &rsipstack::sip::Request,
        profile: &super::profiles::Profile,
    ) -> Result<Option<NumberSettings>, StoreError> {
        let party = identity::called_party(request, profile);
        // T2, T8: a call forwarded from one of our numbers is that number's call.
        let candidates = [
            party.original,
            identity::called(request, profile),
            party.dialled,
        ];
        Ok(candidates
            .into_iter()
            .flatten()
            .find_map(|candidate| self.store.cached_number(&candidate)))
    }

    /// The intake for the opening event, waited for at most the lookup budget. Past it
    /// the call rings the number's queue and the intake completes later, driven by the
    /// call's own task (the third value): a slow database never drops a call.
    async fn intake_within_budget(
        &self,
        event: CallEvent,
        number: &NumberSettings,
    ) -> (Option<String>, EventAnswer, Option<driver::Boxed<()>>) {
        // The call rings only once its opening event is durable (the journal's fsync);
        // the budget is for the CRM lookup and the commit behind it.
        let opening = self.store.write_ahead(&event, &self.node).await;
        let (store, node) = (self.store.clone(), self.node.clone());
        let mut intake: driver::Boxed<Result<Option<crate::store::EventOutcome>, StoreError>> =
            Box::pin(async move { store.open_call_after(&event, &node, opening).await });
        match tokio::time::timeout(self.lookup_budget, &mut intake).await {
            Ok(Ok(Some(outcome))) => {
                announce_intake(&self.store, &self.events, &outcome);
                (Some(outcome.call.id.to_string()), outcome.answer, None)
            }
            Ok(Ok(None)) => {
                tracing::warn!(
                    "call intake journaled (database unreachable); routing by the queue"
                );
                (None, self.queue_answer(number).await, None)
            }
            Ok(Err(err)) => {
                tracing::error!(%err, "call intake failed; routing by the queue");
                (None, self.queue_answer(number).await, None)
            }
            Err(_) => {
                metrics::counter!("leadline_call_lookup_deadline_missed_total").increment(1);
                tracing::warn!(
                    budget_ms = self.lookup_budget.as_millis() as u64,
                    "CRM lookup past its budget; routing by the queue, CRM link completes later"
                );
                // The call's later writes wait for this: an `answered` or `ended` applied
                // before the opening event has written the call would find no call.
                let (store, events) = (self.store.clone(), self.events.clone());
                let late: driver::Boxed<()> = Box::pin(async move {
                    match intake.await {
                        Ok(Some(outcome)) => announce_intake(&store, &events, &outcome),
                        Ok(None) => {}
                        Err(err) => tracing::error!(%err, "late call intake failed"),
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

    /// Who rings for a call on `number` and how its queue takes a caller nobody answers.
    /// The intake's order is the responsible first (T5) when they are its first entry,
    /// then the queue in turn (T9). The responsible rings unless paused or offline; of
    /// the queue only its free members ring, in its strategy (`ring_all`: all at once).
    /// When no member is free but someone is available, a caller nobody answers waits.
    fn queue_plan(
        &self,
        number: &NumberSettings,
        answer: &EventAnswer,
        responsible: Option<&UserId>,
    ) -> (router::RoutePlan, Option<call::QueueCall>) {
        let order = &answer.route;
        let devices = self.devices(order);
        let Some(queue) = number.queue.clone() else {
            return (router::plan(order, &devices, number.ring_timeout_s), None);
        };
        let settings = self.store.cached_queue_settings(&queue).unwrap_or_default();
        let first = responsible.filter(|r| order.first() == Some(*r));
        let rest: Vec<UserId> = order
            .iter()
            .filter(|u| Some(*u) != first)
            .cloned()
            .collect();
        let (free, staffed) = self.desk.free_members(&queue, &rest);
        let mut ring: Vec<UserId> = first
            .filter(|r| {
                !matches!(
                    self.desk.presence(r),
                    crate::crm::model::Presence::Paused | crate::crm::model::Presence::Offline
                )
            })
            .cloned()
            .into_iter()
            .collect();
        let ring_all = settings.strategy == crate::crm::model::QueueStrategy::RingAll;
        if !ring_all {
            let more: Vec<UserId> = free.iter().filter(|u| !ring.contains(u)).cloned().collect();
            ring.extend(more);
        }
        let mut plan = router::plan(&ring, &devices, number.ring_timeout_s);
        if ring_all {
            let devices: Vec<Device> = free
                .iter()
                .filter(|u| !ring.contains(u))
                .flat_map(|user| {
                    let mut own = devices.get(user).cloned().unwrap_or_default();
                    own.truncate(router::MAX_DEVICES_PER_USER);
                    own.into_iter().map(|mut d| {
                        d.owner = Some(user.clone());
                        d
                    })
                })
                .collect();
            if let Some(user) = devices.first().and_then(|d| d.owner.clone()) {
                plan.steps.push(router::Step { user, devices });
            }
        }
        let max_message_s = self
            .store
            .cached_number_media(&number.id)
            .after_hours
            .map_or(120, |rule| rule.max_message_s);
        let queue_call = call::QueueCall {
            id: queue,
            wait_when_unanswered: free.is_empty() && staffed,
            max_wait: Duration::from_secs(u64::from(settings.max_wait_s)),
            overflow: settings.overflow,
            max_message: Duration::from_secs(u64::from(max_message_s)),
        };
        (plan, Some(queue_call))
    }

    /// The registered devices of each employee in the order, from the in-memory bindings.
    pub(crate) fn devices(&self, order: &[UserId]) -> HashMap<UserId, Vec<Device>> {
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
                        path: b.path,
                        q: b.q.and_then(|q| q.parse().ok()),
                        owner: None,
                        carrier_host: None,
                    })
                    .collect(),
            );
        }
        devices
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

impl B2bua {
    /// Sends an INVITE to `device`, its dialog reporting on `states`; the future ends
    /// with the INVITE's final answer (`None` when none came).
    async fn send_invite(
        self: &Arc<Self>,
        option: InviteOption,
        device: &Device,
        states: rsipstack::dialog::dialog::DialogStateSender,
    ) -> Result<(InviteDialog, driver::Boxed<Option<Response>>), B2buaError> {
        let mut option = option;
        if let Some(proxy) = self.sip_proxy {
            // Behind the proxy the phone's flow ends at the proxy, not here: the leg
            // goes to the proxy, which relays it along the phone's Path.
            option.destination = Some(SipAddr {
                r#type: Some(Transport::Udp),
                addr: proxy.into(),
            });
            option.route_set = route_through(proxy, device.path.as_deref());
        } else if let Some(transport) = stream_transport(&device.transport)
            && let Ok(peer) = device.source.parse::<SocketAddr>()
        {
            let flow = self
                .flow_for(transport, peer, device.carrier_host.as_deref())
                .await?;
            return self.invite_over_flow(option, flow, states).await;
        }
        let (dialog, handle) = self.dialogs.do_invite_async(option, states)?;
        let answer = Box::pin(async move {
            match handle.await {
                Ok(Ok((_, response))) => response,
                _ => None,
            }
        });
        Ok((dialog, answer))
    }

    /// The connection a leg over TCP or TLS goes down. A phone's is the one it registered
    /// over (RFC 3261 §18.2.2, RFC 5626): behind NAT nothing else reaches it. A carrier
    /// over TLS gets the open connection, or a new one whose certificate must verify for
    /// the trunk's host, whether or not the trunk registers.
    async fn flow_for(
        &self,
        transport: Transport,
        peer: SocketAddr,
        carrier_host: Option<&str>,
    ) -> Result<crate::sip::endpoint::TcpFlow, B2buaError> {
        let flow = match (transport, carrier_host) {
            (Transport::Tls, Some(host)) => {
                self.endpoint
                    .tls_flow(peer, host, LEG_CONNECT_TIMEOUT)
                    .await?
            }
            _ => {
                self.endpoint
                    .flow_to(transport, peer, LEG_CONNECT_TIMEOUT)
                    .await?
            }
        };
        Ok(flow)
    }

    /// An INVITE down one of our TCP or TLS connections ([`B2bua::flow_for`]). rsipstack's
    /// `do_invite_async` would open a new connection, so this is its counterpart with the
    /// transaction bound to our flow; in-dialog requests then follow the same flow. The
    /// transaction is driven by the returned future, which the call's task polls.
    async fn invite_over_flow(
        self: &Arc<Self>,
        option: InviteOption,
        flow: crate::sip::endpoint::TcpFlow,
        states: rsipstack::dialog::dialog::DialogStateSender,
    ) -> Result<(InviteDialog, driver::Boxed<Option<Response>>), B2buaError> {
        let (dialog, mut tx) = self.dialogs.create_client_invite_dialog(option, states)?;
        tx.connection = Some(flow.connection);
        let b2bua = self.clone();
        let early = dialog.id().to_string();
        b2bua.own_dialogs_insert(early.clone(), dialog.clone());
        let invite = dialog.clone();
        let answer = Box::pin(async move {
            let result = invite.process_invite(&mut tx).await;
            b2bua.own_dialogs_remove(&early);
            if let Ok((id, Some(response))) = &result
                && response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
            {
                b2bua.own_dialogs_insert(id.to_string(), invite.clone());
                // Drain the accepted transaction until it ends (RFC 6026), as rsipstack
                // does for the dialogs it sets up.
                tokio::spawn(async move { while tx.receive().await.is_some() {} });
            }
            result.ok().and_then(|(_, response)| response)
        });
        Ok((dialog, answer))
    }
}

/// How long connecting to a leg's peer over TCP may take before the leg fails (a TLS
/// handshake has the endpoint's own bound on top).
const LEG_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where requests to a device go: the address its REGISTER came from (it may be behind
/// NAT), over its transport.
/// Tells this node's webhooks what the intake of a call's opening event wrote (the
/// entities it created, the call's activity), once: a repeated opening event wrote
/// nothing, later events of the call do not run the intake, and a journal replay does
/// not come this way. In a task of its own: the reads a followed event needs never hold
/// up ringing.
fn announce_intake(store: &Store, events: &EventBus, outcome: &crate::store::EventOutcome) {
    if outcome.repeated {
        return;
    }
    let (store, events, outcome) = (store.clone(), events.clone(), outcome.clone());
    tokio::spawn(async move {
        crate::http::calls::announce_intake(&store, &events, &outcome).await;
    });
}

fn destination(device: &Device) -> Option<SipAddr> {
    let transport = stream_transport(&device.transport).unwrap_or(Transport::Udp);
    device
        .source
        .parse::<SocketAddr>()
        .ok()
        .map(|addr| SipAddr {
            r#type: Some(transport),
            addr: addr.into(),
        })
}

/// The connection-oriented transport a device registered over (its binding's
/// `transport`), whose connection requests to it reuse; `None` for UDP. A leg to a device
/// with `Some(Transport::Tls)` has its signalling encrypted.
pub fn stream_transport(registered: &str) -> Option<Transport> {
    match registered {
        "tcp" => Some(Transport::Tcp),
        "tls" => Some(Transport::Tls),
        _ => None,
    }
}

/// The Route of a request sent through `proxy`: the device's Path as it registered (it
/// names the proxy and the phone's address), else the proxy itself, loose-routing.
fn route_through(proxy: SocketAddr, path: Option<&str>) -> Vec<rsipstack::sip::typed::Route> {
    path.and_then(|path| rsipstack::sip::typed::Route::parse_header_list(path).ok())
        .filter(|routes| !routes.is_empty())
        .or_else(|| {
            rsipstack::sip::typed::Route::parse_header_list(&format!("<sip:{proxy};lr>")).ok()
        })
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Behind the proxy a leg to a phone follows the Path it registered through; a phone
    /// without Path and a carrier get the proxy as their one loose route.
    #[test]
    fn legs_through_the_proxy_follow_the_path_else_the_proxy() {
        let proxy: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        let path = "<sip:10.0.0.5:5060;lr;received=sip:203.0.113.5:40000>, <sip:edge.example;lr>";
        let routes = route_through(proxy, Some(path));
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].uri.host_with_port.to_string(), "10.0.0.5:5060");
        assert!(routes[0].has_lr());
        assert_eq!(routes[1].uri.host_with_port.to_string(), "edge.example");
        for path in [None, Some("")] {
            let routes = route_through(proxy, path);
            assert_eq!(routes.len(), 1, "{path:?}");
            assert_eq!(routes[0].uri.host_with_port.to_string(), "10.0.0.5:5060");
            assert!(routes[0].has_lr());
        }
    }
}
