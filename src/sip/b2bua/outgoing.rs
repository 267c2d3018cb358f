//! Agents' outgoing calls: out through the trunk of the agent's number.

use super::*;

impl B2bua {
    /// An authenticated agent's call to an outside number: out through
    /// the trunk of the agent's number, with that number as caller ID written the way the
    /// trunk's profile says, logged and put through the intake (T7).
    pub async fn outgoing(
        self: Arc<Self>,
        mut tx: Transaction,
        user: UserId,
    ) -> Result<(), B2buaError> {
        let received = tokio::time::Instant::now();
        let request = tx.original.clone();
        let refuse = |status: StatusCode, why: &str| {
            (
                status,
                vec![Header::Warning(format!("399 leadline \"{why}\"").into())],
            )
        };
        let dialled = request
            .uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        // A colleague's extension: an internal call, no trunk and no CRM.
        if let Some(colleague) = self.store.sip_credentials(&dialled).await? {
            return self
                .internal(tx, user, colleague.user, dialled, received)
                .await;
        }
        let Some((our_number, trunk_id)) = self.store.outgoing_line(&user).await? else {
            let (status, headers) = refuse(
                StatusCode::Forbidden,
                "no number with a trunk for outgoing calls",
            );
            tx.reply_with(status, headers, None).await?;
            return Ok(());
        };
        let (Some(number), trunk) = (
            self.store.configured_number(&our_number).await?,
            self.store.get_trunk(&trunk_id).await?,
        ) else {
            tx.reply(StatusCode::ServerInternalError).await?;
            return Ok(());
        };
        let target = match crate::matcher::normalise_phone(&dialled, Some(number.default_country)) {
            Ok(crate::matcher::PhoneKey::E164(e164)) => e164,
            _ => {
                let (status, headers) =
                    refuse(StatusCode::NotFound, "the dialled number cannot be read");
                tx.reply_with(status, headers, None).await?;
                return Ok(());
            }
        };
        let carrier = match self.carrier_leg(&trunk, &target, &number.number).await? {
            Ok(carrier) => carrier,
            Err((status, why)) => {
                let (status, headers) = refuse(status, why);
                tx.reply_with(status, headers, None).await?;
                return Ok(());
            }
        };
        let call_id = request.call_id_header()?.value().to_owned();
        let span =
            tracing::info_span!("call", %call_id, number = %number.number, direction = "outgoing");
        let media_settings = self.store.number_media(&number.id).await?;
        let session = match self.media_session(media_settings.media_relay || trunk.media_relay) {
            Ok(session) => session,
            Err(status) => {
                let (status, headers) = refuse(status, "no free media ports");
                tx.reply_with(status, headers, None).await?;
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

        let opening = CallEvent {
            call_id: call_id.clone(),
            event: CallEventKind::Ringing,
            direction: Direction::Outgoing,
            from: number.number.clone(),
            to: target.clone(),
            user: Some(user.clone()),
            outcome: None,
            at: now_ms(),
            diverted_from: None,
            verstat: None,
        };
        let (call_record, answer, late_intake) = self.intake_within_budget(opening, &number).await;
        let plan = router::RoutePlan {
            steps: vec![router::Step {
                user: user.clone(),
                devices: vec![carrier.device],
            }],
            unreachable: Vec::new(),
            // The carrier gives up on its own; ours is only a bound.
            ring_timeout_ms: 180_000,
        };
        let mut shown = self.shown_caller(&answer, None, &target).await;
        // What the carrier sees: our number, no CRM name, no link into our API.
        shown.name = None;
        shown.info_url = None;
        shown.caller_id = Some(carrier.caller_id);
        let machine = call::Call::new(call::Setup {
            kind: call::Kind::Outgoing,
            plan,
            phones: None,
            offer: call::Body {
                content_type: content_type(&request.headers),
                bytes: request.body.clone(),
            },
            session_interval_s: None,
            after_hours: None,
            recording: media_settings.recording && session.is_some(),
            intake_pending: late_intake.is_some(),
            received,
            queue: None,
        });
        let spec = CallSpec {
            call_record,
            call_id,
            customer: target,
            number: Some(number),
            employee: Some(user.clone()),
            direction: Direction::Outgoing,
            shown,
            phone_shown: None,
            from_host: carrier.host,
            credential: carrier.credential,
            media: CallMedia {
                session,
                settings: media_settings,
                recording: None,
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

    /// How to call `target` (E.164) out through a carrier trunk, showing `caller` (E.164):
    /// both written the way the trunk's profile wants, its address resolved, its account's
    /// credentials for the carrier's challenge. `Err` says why not, for the caller.
    pub(super) async fn carrier_leg(
        &self,
        trunk: &TrunkRecord,
        target: &str,
        caller: &str,
    ) -> Result<Result<CarrierLeg, (StatusCode, &'static str)>, B2buaError> {
        let profile = self
            .profiles
            .get(&trunk.profile)
            .or_else(|| self.profiles.get("generic"));
        let Some(host) = trunk.host.clone() else {
            return Ok(Err((
                StatusCode::ServiceUnavailable,
                "the trunk has no host",
            )));
        };
        let Some(destination) = tokio::net::lookup_host((host.as_str(), trunk.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
        else {
            return Ok(Err((
                StatusCode::ServiceUnavailable,
                "the trunk's host cannot be resolved",
            )));
        };
        let (written_target, caller_id) = match profile {
            Some(profile) => (
                identity::write_number(target, profile),
                identity::write_number(caller, profile),
            ),
            None => (target.to_owned(), caller.to_owned()),
        };
        let credential = match (&trunk.username, self.store.trunk_password(&trunk.id).await?) {
            (Some(username), Some(password)) => Some(rsipstack::dialog::authenticate::Credential {
                username: username.clone(),
                password,
                realm: None,
                auth_username: None,
            }),
            _ => None,
        };
        Ok(Ok(CarrierLeg {
            device: Device {
                contact: format!("sip:{written_target}@{host}:{port}", port = trunk.port),
                transport: trunk.transport.to_string(),
                source: destination.to_string(),
                path: None,
                q: None,
                owner: None,
                carrier_host: Some(host.clone()),
            },
            credential,
            host,
            caller_id,
        }))
    }

    /// An agent calling a colleague's extension: their devices ring, showing the
    /// caller's name and extension. Not a customer call: not in the CRM or the call log.
    async fn internal(
        self: Arc<Self>,
        tx: Transaction,
        caller: UserId,
        callee: UserId,
        extension: String,
        received: tokio::time::Instant,
    ) -> Result<(), B2buaError> {
        let request = tx.original.clone();
        let devices = self.devices(std::slice::from_ref(&callee));
        let plan = router::plan(std::slice::from_ref(&callee), &devices, INTERNAL_RING_S);
        let caller_record = self.store.get_user(&caller).await?;
        let call_id = request.call_id_header()?.value().to_owned();
        let span = tracing::info_span!("call", %call_id, direction = "internal");
        // Employees' phones are often behind NAT: internal calls are relayed too.
        let session = match self.media_session(true) {
            Ok(session) => session,
            Err(status) => {
                let mut tx = tx;
                tx.reply(status).await?;
                return Ok(());
            }
        };
        // The caller's signalling transport decides whether it may use SRTP.
        if let Some(warning) = media::srtp_refusal(
            session.as_deref(),
            crate::sip::endpoint::is_tls(tx.connection.as_ref()),
            &request.body,
        ) {
            let mut tx = tx;
            tx.reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                .await?;
            return Ok(());
        }
        let (inbound, state_sender, states) = self.take_caller(tx)?;
        let shown = Shown {
            caller_id: caller_record.extension.clone(),
            entity: None,
            responsible: None,
            name: Some(caller_record.name.clone()),
            info_url: None,
            number: extension.clone(),
        };
        let machine = call::Call::new(call::Setup {
            kind: call::Kind::Internal,
            plan,
            phones: None,
            offer: call::Body {
                content_type: content_type(&request.headers),
                bytes: request.body.clone(),
            },
            session_interval_s: None,
            after_hours: None,
            recording: false,
            intake_pending: false,
            received,
            queue: None,
        });
        let spec = CallSpec {
            call_record: None,
            call_id,
            customer: extension,
            number: None,
            employee: Some(caller.clone()),
            direction: Direction::Outgoing,
            shown,
            phone_shown: None,
            from_host: self.local.to_string(),
            credential: None,
            media: CallMedia {
                session,
                ..CallMedia::default()
            },
        };
        Driver::new(
            self.clone(),
            machine,
            spec,
            state_sender,
            Some(inbound),
            None,
        )
        .run(states)
        .instrument(span)
        .await;
        Ok(())
    }
}

/// How long a colleague's phones ring for an internal call.
const INTERNAL_RING_S: u32 = 30;

/// A call out through a carrier trunk, ready to send.
pub(super) struct CarrierLeg {
    pub device: Device,
    pub credential: Option<rsipstack::dialog::authenticate::Credential>,
    /// The trunk's host: the From domain the carrier expects.
    pub host: String,
    /// Our caller ID as the trunk's profile writes it.
    pub caller_id: String,
}
