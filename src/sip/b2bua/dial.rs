//! Click-to-call (T7): the gateway rings an employee's own registered phones and, when
//! one answers, calls the customer out through the number's trunk with the number as
//! caller ID, then connects the two.
//!
//! The employee's phones ring first, all at once for the number's ring timeout, like an
//! agent's phones for an incoming call. Nobody knows the customer's SDP yet, so the
//! phones are offered the media relay's: the gateway is always in the media path of a
//! click-to-call. Once a phone answers, the rest is the B2BUA's ordinary outgoing call
//! whose caller's dialog is that answered leg: the phone's answer is offered to the
//! carrier, and ringing, the customer's answer, the talk and the call log go as for a
//! call an agent's softphone places itself.

use super::*;
use crate::crm::intake::NumberSettings;
use crate::crm::model::TrunkId;
use crate::media::MediaSession;
use crate::store::{CallRecord, NumberMedia};

/// The HTTP API's way into the B2BUA to place click-to-calls.
#[derive(Clone)]
pub struct Dialer {
    b2bua: Arc<B2bua>,
}

/// A click-to-call to place.
#[derive(Debug, Clone)]
pub struct DialOrder {
    /// The employee whose phones ring first.
    pub user: UserId,
    /// Our number the call goes out from, shown as caller ID.
    pub number: NumberSettings,
    /// The number's trunk.
    pub trunk: TrunkId,
    /// The customer, in E.164.
    pub target: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("the employee has no registered phone to ring")]
    NoRegisteredPhone,
    /// The number's trunk cannot carry a call (no host, or one that does not resolve).
    #[error("{0}")]
    Trunk(&'static str),
    /// The gateway runs without the media relay, which click-to-call needs.
    #[error("click-to-call needs the media relay, which this gateway runs without")]
    NoRelay,
    #[error("no free media ports")]
    NoMediaPorts,
    #[error(transparent)]
    B2bua(#[from] B2buaError),
}

impl From<StoreError> for DialError {
    fn from(err: StoreError) -> Self {
        DialError::B2bua(B2buaError::Store(err))
    }
}

impl Dialer {
    pub fn new(b2bua: Arc<B2bua>) -> Self {
        Self { b2bua }
    }

    /// Logs the call (its opening `ringing` through the intake, as every outgoing call)
    /// and starts ringing the employee's phones; returns the call log row at once.
    pub async fn dial(&self, order: DialOrder) -> Result<CallRecord, DialError> {
        let b2bua = &self.b2bua;
        let user = std::slice::from_ref(&order.user);
        let plan = router::plan(
            user,
            &b2bua.devices(user).await?,
            order.number.ring_timeout_s,
        );
        if plan.steps.is_empty() {
            return Err(DialError::NoRegisteredPhone);
        }
        let trunk = b2bua.store.get_trunk(&order.trunk).await?;
        let carrier = b2bua
            .carrier_leg(&trunk, &order.target, &order.number.number)
            .await?
            .map_err(|(_, why)| DialError::Trunk(why))?;
        let settings = b2bua.store.number_media(&order.number.id).await?;
        let session = b2bua
            .media_session(true)
            .map_err(|_| DialError::NoMediaPorts)?
            .ok_or(DialError::NoRelay)?;
        let call_id = uuid::Uuid::now_v7().to_string();
        let opening = CallEvent {
            call_id: call_id.clone(),
            event: CallEventKind::Ringing,
            direction: Direction::Outgoing,
            from: order.number.number.clone(),
            to: order.target.clone(),
            user: Some(order.user.clone()),
            outcome: None,
            at: now_ms(),
        };
        let outcome = b2bua.store.apply_call_event(&opening).await?;
        let shown = b2bua
            .shown_caller(&outcome.answer, None, &order.target)
            .await;
        // Live from the answer on, before the task has rung anything.
        b2bua.live.set(&call_id, Vec::new());
        let span = tracing::info_span!("call", %call_id, number = %order.number.number, direction = "click-to-call");
        let dialling = Dialling {
            b2bua: b2bua.clone(),
            call_record: outcome.call.id.to_string(),
            call_id,
            user: order.user,
            number: order.number,
            customer: order.target,
            plan,
            shown,
            carrier,
            session,
            settings,
            received: std::time::Instant::now(),
        };
        tokio::spawn(dialling.run().instrument(span));
        Ok(outcome.call)
    }
}

/// The SDP the employee's phones are offered, before the gateway's rewrite puts the
/// relay's address in: G.711 both ways and DTMF events, which every desk phone and
/// softphone speaks and the carrier is then offered in the phone's choice.
const RELAY_OFFER: &str = "v=0\r\n\
    o=- 0 0 IN IP4 0.0.0.0\r\n\
    s=-\r\n\
    c=IN IP4 0.0.0.0\r\n\
    t=0 0\r\n\
    m=audio 9 RTP/AVP 8 0 101\r\n\
    a=rtpmap:8 PCMA/8000\r\n\
    a=rtpmap:0 PCMU/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-15\r\n\
    a=sendrecv\r\n";

/// How long the carrier may ring the customer: it gives up on its own; ours is a bound.
const CUSTOMER_RING_BOUND_MS: u64 = 180_000;

/// A click-to-call from the log entry until an employee's phone answers; then a [`Call`].
struct Dialling {
    b2bua: Arc<B2bua>,
    call_record: String,
    call_id: String,
    user: UserId,
    number: NumberSettings,
    customer: String,
    /// The employee's phones.
    plan: router::RoutePlan,
    /// The customer as the employee's phone shows them.
    shown: Shown,
    carrier: CarrierLeg,
    session: Arc<MediaSession>,
    settings: NumberMedia,
    received: std::time::Instant,
}

impl Dialling {
    async fn run(self) {
        // Every dialog of the call reports here, the answered phone's for the whole call.
        let (state_sender, states) = self.b2bua.dialogs.new_dialog_state_channel();
        // Given as the customer's side: the relay's rewrite faces it to the employee.
        let offer = self.session.sdp_from(Side::Callee, RELAY_OFFER.as_bytes());
        let mut legs = Vec::new();
        match self.ring_employee(&offer, &state_sender, &mut legs).await {
            // The employee hung up in the moment between answering and this.
            Some((phone, _)) if matches!(phone.state(), DialogState::Terminated(..)) => {
                self.forget(&phone);
                self.unanswered(legs).await;
            }
            Some((phone, answer)) => {
                self.call_customer(phone, answer, legs, state_sender, states)
                    .await;
            }
            None => self.unanswered(legs).await,
        }
    }

    /// Rings the employee's phones until one answers (its dialog and 2xx) or none will.
    /// Their dialogs' reports wait on the call's channel for the [`Call`] that follows.
    async fn ring_employee(
        &self,
        offer: &[u8],
        states: &rsipstack::dialog::dialog::DialogStateSender,
        book: &mut Vec<(LegId, CallLeg)>,
    ) -> Option<(InviteDialog, Response)> {
        let (done_sender, mut done) = mpsc::unbounded_channel::<LegDone>();
        let mut legs: HashMap<LegId, InviteDialog> = HashMap::new();
        let mut answers: HashMap<LegId, Response> = HashMap::new();
        let mut step_deadline: Option<(usize, tokio::time::Instant)> = None;
        let (mut ringing, mut pending) = Ringing::start(&self.plan);
        loop {
            for action in std::mem::take(&mut pending) {
                match action {
                    RingAction::StartStep(step) => {
                        self.publish("ringing", vec![self.user.clone()], None, None);
                        step_deadline = Some((
                            step,
                            tokio::time::Instant::now()
                                + Duration::from_millis(self.plan.ring_timeout_ms),
                        ));
                        for (device, target) in self.plan.steps[step].devices.iter().enumerate() {
                            let leg = (step, device);
                            self.leg_started(book, leg);
                            match self.invite_phone(target, offer, states).await {
                                Ok((dialog, handle)) => {
                                    legs.insert(leg, dialog);
                                    let done = done_sender.clone();
                                    tokio::spawn(async move {
                                        let response = match handle.await {
                                            Ok(Ok((_, response))) => response,
                                            _ => None,
                                        };
                                        let _ = done.send(LegDone { leg, response });
                                    });
                                }
                                Err(err) => {
                                    tracing::warn!(%err, "cannot ring the employee's phone");
                                    self.leg_ended(book, leg, "failed", Some(503));
                                    pending
                                        .extend(ringing.on(RingEvent::Failed { leg, status: 503 }));
                                }
                            }
                        }
                    }
                    RingAction::Cancel(cancelled) => {
                        for leg in cancelled {
                            self.leg_ended(book, leg, "cancelled", None);
                            if let Some(dialog) = legs.get(&leg).cloned() {
                                tokio::spawn(async move {
                                    let _ = dialog.hangup().await;
                                });
                            }
                        }
                    }
                    // The employee calls; nobody waits to hear their phone ring.
                    RingAction::RelayProgress { .. } => {}
                    RingAction::Connect(leg) => {
                        if let (Some(dialog), Some(response)) =
                            (legs.get(&leg).cloned(), answers.remove(&leg))
                        {
                            return Some((dialog, response));
                        }
                    }
                    RingAction::Reject { .. } => return None,
                }
            }
            let timer = step_timer(step_deadline);
            tokio::select! {
                () = timer => {
                    if let Some((step, _)) = step_deadline.take() {
                        for (id, leg) in book.clone() {
                            if id.0 == step && leg.state == "ringing" {
                                self.leg_ended(book, id, "no_answer", Some(408));
                            }
                        }
                        pending.extend(ringing.on(RingEvent::StepTimedOut { step }));
                    }
                }
                Some(LegDone { leg, response }) = done.recv() => {
                    let status = response
                        .as_ref()
                        .map_or(408, |r| u16::from(r.status_code.clone()));
                    self.leg_ended(book, leg, leg_state(status), Some(status));
                    if (200..300).contains(&status) {
                        if let Some(response) = response {
                            answers.insert(leg, response);
                        }
                        pending.extend(ringing.on(RingEvent::Answered(leg)));
                    } else {
                        pending.extend(ringing.on(RingEvent::Failed { leg, status }));
                    }
                }
            }
        }
    }

    /// Rings one of the employee's phones: the customer's number and CRM name as the
    /// caller, `Call-Info` with the entity's URL, the relay's SDP.
    async fn invite_phone(
        &self,
        device: &Device,
        offer: &[u8],
        states: &rsipstack::dialog::dialog::DialogStateSender,
    ) -> Result<
        (
            InviteDialog,
            tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
        ),
        B2buaError,
    > {
        let caller = Uri::try_from(
            format!(
                "sip:{}@{}",
                caller_user(&self.shown.number),
                self.b2bua.local
            )
            .as_str(),
        )?;
        let headers = self
            .shown
            .info_url
            .iter()
            .map(|url| Header::Other("Call-Info".into(), format!("<{url}>;purpose=info")))
            .collect();
        let option = InviteOption {
            caller_display_name: self.shown.name.clone(),
            caller,
            callee: Uri::try_from(device.contact.as_str())?,
            destination: destination(device),
            content_type: Some("application/sdp".to_owned()),
            offer: Some(offer.to_vec()),
            contact: self.b2bua.contact_uri(),
            headers: Some(headers),
            ..InviteOption::default()
        };
        self.b2bua.send_invite(option, device, states.clone()).await
    }

    /// A phone answered: the customer is called out through the number's trunk, the
    /// phone's SDP offered, and the call goes on as the employee's own outgoing call.
    async fn call_customer(
        self,
        phone: InviteDialog,
        answer: Response,
        legs: Vec<(LegId, CallLeg)>,
        state_sender: rsipstack::dialog::dialog::DialogStateSender,
        states: DialogStateReceiver,
    ) {
        // The phone's legs are no step of the customer's plan.
        let legs = legs
            .into_iter()
            .enumerate()
            .map(|(i, (_, leg))| ((usize::MAX, i), leg))
            .collect();
        let shown = Shown {
            // What the carrier sees: our number, no CRM name, no link into our API.
            caller_id: Some(self.carrier.caller_id),
            entity: self.shown.entity,
            responsible: self.shown.responsible,
            name: None,
            info_url: None,
            number: self.customer.clone(),
        };
        let call = Call {
            b2bua: self.b2bua,
            call_record: Some(self.call_record),
            call_id: self.call_id,
            customer: self.customer,
            number: Some(self.number),
            inbound: phone,
            offer: answer.body.clone(),
            content_type: content_type(&answer.headers),
            plan: router::RoutePlan {
                steps: vec![router::Step {
                    user: self.user,
                    devices: vec![self.carrier.device],
                }],
                unreachable: Vec::new(),
                ring_timeout_ms: CUSTOMER_RING_BOUND_MS,
            },
            shown,
            state_sender,
            book: CallBook {
                legs: std::sync::Mutex::new(legs),
                ..CallBook::default()
            },
            direction: Direction::Outgoing,
            from_host: self.carrier.host,
            credential: self.carrier.credential,
            received: self.received,
            session_interval_s: None,
            late_intake: tokio::sync::Mutex::new(None),
            media: CallMedia {
                session: Some(self.session),
                settings: self.settings,
                recording: Default::default(),
            },
            dialled: true,
        };
        call.run(states).await;
    }

    /// No phone of the employee answered (or they declined): the customer is never
    /// called, and the call ends as cancelled, like a call its caller gave up on.
    async fn unanswered(self, mut legs: Vec<(LegId, CallLeg)>) {
        let now = now_ms();
        for (_, leg) in legs.iter_mut() {
            leg.ended_at.get_or_insert(now);
        }
        self.b2bua.live.remove(&self.call_id);
        let store = &self.b2bua.store;
        if let Err(err) = store.set_call_legs(&self.call_id, &snapshot(&legs)).await {
            tracing::error!(%err, "cannot record the call's legs");
        }
        let ended = CallEvent {
            call_id: self.call_id.clone(),
            event: CallEventKind::Ended,
            direction: Direction::Outgoing,
            from: self.number.number.clone(),
            to: self.customer.clone(),
            user: None,
            outcome: Some(CallOutcome::Cancelled),
            at: now_ms(),
        };
        if let Err(err) = store.apply_call_event(&ended).await {
            tracing::error!(%err, "cannot record the call event");
        }
        self.session.stats_after_close().await;
        self.publish("ended", Vec::new(), None, Some(CallOutcome::Cancelled));
        metrics::counter!("leadline_calls_total", "outcome" => "cancelled").increment(1);
        tracing::info!("the employee did not answer; the customer was not called");
    }

    fn forget(&self, dialog: &InviteDialog) {
        self.b2bua.forget_dialog(&dialog.id());
    }

    fn leg_started(&self, legs: &mut Vec<(LegId, CallLeg)>, leg: LegId) {
        let step = &self.plan.steps[leg.0];
        legs.push((
            leg,
            CallLeg {
                user: step.user.clone(),
                target: step.devices[leg.1].contact.clone(),
                started_at: now_ms(),
                ended_at: None,
                state: "ringing".to_owned(),
                status: None,
            },
        ));
        self.b2bua.live.set(&self.call_id, snapshot(legs));
    }

    /// As [`Call::leg_ended`]: the first outcome given wins.
    fn leg_ended(
        &self,
        legs: &mut [(LegId, CallLeg)],
        leg: LegId,
        state: &str,
        status: Option<u16>,
    ) {
        if let Some((_, record)) = legs.iter_mut().find(|(id, _)| *id == leg)
            && record.state == "ringing"
        {
            record.state = state.to_owned();
            record.status = status.or(record.status);
            if state != "answered" {
                record.ended_at = Some(now_ms());
            }
        }
        self.b2bua.live.set(&self.call_id, snapshot(legs));
    }

    /// Tells the call window, as [`Call::publish`] does.
    fn publish(
        &self,
        event: &str,
        ringing: Vec<UserId>,
        answered_by: Option<&UserId>,
        outcome: Option<CallOutcome>,
    ) {
        self.b2bua.events.publish(CallUpdate {
            event: event.to_owned(),
            call: Some(self.call_record.clone()),
            call_id: self.call_id.clone(),
            direction: Direction::Outgoing.to_string(),
            customer: self.customer.clone(),
            number: self.number.number.clone(),
            entity: self.shown.entity.clone(),
            name: self.shown.name.clone(),
            responsible: self.shown.responsible.as_ref().map(ToString::to_string),
            ringing: ringing.into_iter().map(|u| u.to_string()).collect(),
            answered_by: answered_by.map(ToString::to_string),
            outcome: outcome.map(|o| o.to_string()),
            at: crate::store::rfc3339(now_ms()),
        });
    }
}

impl Call {
    /// A click-to-call whose customer was not reached: the employee's phone is hung up
    /// with BYE (a no-op when they hung up themselves) and the outcome follows the
    /// carrier's answer.
    pub(super) async fn customer_unreached(&self, why: Unanswered) -> CallOutcome {
        let status = self
            .book
            .legs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|(id, _)| id.0 != usize::MAX)
            .and_then(|(_, leg)| leg.status);
        let _ = self.inbound.hangup().await;
        unreached_outcome(why, status)
    }
}

/// How a click-to-call that never connected the customer ended, given the customer
/// leg's final SIP status: the employee hung up first (cancelled), the customer was busy,
/// did not answer (missed), or the call could not be made at all (failed: a wrong
/// number, the carrier refusing it).
fn unreached_outcome(why: Unanswered, status: Option<u16>) -> CallOutcome {
    match why {
        Unanswered::Cancelled => CallOutcome::Cancelled,
        Unanswered::Busy => CallOutcome::Busy,
        Unanswered::Missed => match status {
            None | Some(408 | 480 | 487) => CallOutcome::Missed,
            Some(_) => CallOutcome::Failed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp;

    #[test]
    fn the_customer_unreached_is_busy_missed_or_failed_by_the_carriers_answer() {
        let busy = unreached_outcome(Unanswered::Busy, Some(486));
        assert_eq!(busy, CallOutcome::Busy);
        for status in [None, Some(408), Some(480), Some(487)] {
            assert_eq!(
                unreached_outcome(Unanswered::Missed, status),
                CallOutcome::Missed,
                "{status:?}"
            );
        }
        for status in [403, 404, 484, 488, 500, 503] {
            assert_eq!(
                unreached_outcome(Unanswered::Missed, Some(status)),
                CallOutcome::Failed,
                "{status}"
            );
        }
        assert_eq!(
            unreached_outcome(Unanswered::Cancelled, Some(487)),
            CallOutcome::Cancelled,
            "the employee hung up while the customer's phone rang"
        );
    }

    #[test]
    fn the_phones_are_offered_g711_and_dtmf_at_the_relay() {
        let offer = sdp::audio(RELAY_OFFER.as_bytes()).expect("an audio offer");
        assert_eq!(offer.payload_types, vec![8, 0, 101]);
        assert_eq!(offer.rtp, None, "no address before the rewrite");
        let relay = sdp::RelayAddress {
            ip: std::net::Ipv4Addr::new(192, 0, 2, 7).into(),
            rtp_port: 20_000,
        };
        let rewritten = sdp::rewrite(RELAY_OFFER.as_bytes(), relay, &mut sdp::Origin::new(1));
        let shown = sdp::audio(&rewritten).expect("still an audio offer");
        assert_eq!(shown.rtp, Some("192.0.2.7:20000".parse().unwrap()));
        assert!(shown.talking(), "a two-way call, not a hold");
        assert_eq!(shown.payload_types, vec![8, 0, 101]);
    }
}
