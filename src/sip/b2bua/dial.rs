//! Click-to-call (T7): the gateway rings an employee's own registered phones and, when
//! one answers, calls the customer out through the number's trunk with the number as
//! caller ID, then connects the two.
//!
//! The employee's phones ring first, all at once for the number's ring timeout, like an
//! agent's phones for an incoming call: the call's machine rings them as its first phase
//! ([`crate::sip::call::Kind::Dialled`]). Nobody knows the customer's SDP yet, so the
//! phones are offered the media relay's: the gateway is always in the media path of a
//! click-to-call. Once a phone answers, the rest is the ordinary outgoing call whose
//! caller's dialog is that answered leg: the phone's answer is offered to the carrier,
//! and ringing, the customer's answer, the talk and the call log go as for a call an
//! agent's softphone places itself.

use super::*;
use crate::crm::intake::NumberSettings;
use crate::crm::model::TrunkId;
use crate::store::CallRecord;

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
        let plan = router::plan(user, &b2bua.devices(user), order.number.ring_timeout_s);
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
            diverted_from: None,
            verstat: None,
        };
        let outcome = b2bua
            .store
            .apply_call_event_on(&opening, Some(&b2bua.node))
            .await?;
        announce_intake(&b2bua.store, &b2bua.events, &outcome);
        let shown = b2bua
            .shown_caller(&outcome.answer, None, &order.target)
            .await;
        // Live from the answer on, before the task has rung anything.
        b2bua.live.set(&call_id, Vec::new());
        let span = tracing::info_span!("call", %call_id, number = %order.number.number, direction = "click-to-call");
        let machine = call::Call::new(call::Setup {
            kind: call::Kind::Dialled,
            plan: router::RoutePlan {
                steps: vec![router::Step {
                    user: order.user.clone(),
                    devices: vec![carrier.device],
                }],
                unreachable: Vec::new(),
                ring_timeout_ms: CUSTOMER_RING_BOUND_MS,
            },
            phones: Some(plan),
            offer: call::Body::sdp(RELAY_OFFER),
            session_interval_s: None,
            after_hours: None,
            recording: settings.recording,
            intake_pending: false,
            received: tokio::time::Instant::now(),
            queue: None,
        });
        let spec = CallSpec {
            call_record: Some(outcome.call.id.to_string()),
            call_id,
            customer: order.target.clone(),
            number: Some(order.number),
            employee: None,
            direction: Direction::Outgoing,
            // What the carrier sees: our number, no CRM name, no link into our API.
            shown: Shown {
                caller_id: Some(carrier.caller_id),
                entity: shown.entity.clone(),
                responsible: shown.responsible.clone(),
                name: None,
                info_url: None,
                number: order.target,
            },
            phone_shown: Some(shown),
            from_host: carrier.host,
            credential: carrier.credential,
            media: CallMedia {
                session: Some(session),
                settings,
                recording: None,
            },
        };
        let (state_sender, states) = b2bua.dialogs.new_dialog_state_channel();
        let driver = Driver::new(b2bua.clone(), machine, spec, state_sender, None, None);
        tokio::spawn(driver.run(states).instrument(span));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp;

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
