//! Blind transfer (REFER from the agent's phone, RFC 3515) and T10.

use super::*;

impl Call {
    /// What a REFER from the agent's phone asks for: a blind transfer to an employee, or
    /// a consultation transfer to the far end of another call the phone is in.
    pub(super) async fn transfer_plan(
        &self,
        request: &rsipstack::sip::Request,
    ) -> Result<TransferPlan, StatusCode> {
        let refer_to = request
            .headers
            .iter()
            .find_map(|h| match h {
                Header::ReferTo(v) => Some(v.value().to_owned()),
                Header::Other(name, value) if name.eq_ignore_ascii_case("refer-to") => {
                    Some(value.clone())
                }
                _ => None,
            })
            .ok_or(StatusCode::BadRequest)?;
        let extension = match refer_target(&refer_to) {
            ReferTarget::Blind { user } => user,
            ReferTarget::Attended { replaces } => {
                // Our own dialogs are not "another call"; an unknown one is no call of ours.
                if replaces.call_id == self.caller_call_id()
                    || !self.b2bua.consults_lock().contains_key(&replaces.call_id)
                {
                    return Err(StatusCode::NotFound);
                }
                return Ok(TransferPlan::Attended(replaces));
            }
            ReferTarget::Unreadable => return Err(StatusCode::BadRequest),
        };
        // Transfers to outside numbers go out through a trunk, which the gateway does
        // not do yet: refused rather than half-done.
        match self.b2bua.store.sip_credentials(&extension).await {
            Ok(Some(credentials)) => Ok(TransferPlan::Blind(credentials.user)),
            Ok(None) => Err(StatusCode::NotFound),
            Err(err) => {
                tracing::error!(%err, "cannot look up the transfer target");
                Err(StatusCode::ServerInternalError)
            }
        }
    }

    /// Carries out a transfer the REFER asked for; the caller is talking to the new
    /// party when it returns `Connected`.
    pub(super) async fn transfer(&self, plan: TransferPlan) -> Transferred {
        match plan {
            TransferPlan::Blind(target) => self.blind_transfer(target).await,
            TransferPlan::Attended(replaces) => self.attended_transfer(replaces).await,
        }
    }

    /// Blind transfer: the target's phones ring; the caller is re-INVITEd with the
    /// answering phone's SDP so the media goes there.
    async fn blind_transfer(&self, target: UserId) -> Transferred {
        let (user, dialog, response) = match self.ring_transfer(target).await {
            Ringed::Answered {
                user,
                dialog,
                response,
            } => (user, dialog, response),
            Ringed::Failed(status) => return Transferred::Failed(status),
        };
        self.note_sdp(&dialog.id().call_id, &response.headers, &response.body);
        let contact = dialog.initial_request().uri.to_string();
        let headers =
            content_type(&response.headers).map(|ct| vec![Header::ContentType(ct.into())]);
        let body = (!response.body.is_empty()).then(|| self.sdp_for(Side::Callee, &response.body));
        match self.inbound.reinvite(headers, body).await {
            Ok(Some(answer)) => {
                self.note_sdp(&self.caller_call_id(), &answer.headers, &answer.body);
                // The relay learns where the caller wants the media now.
                self.sdp_for(Side::Caller, &answer.body);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "cannot re-INVITE the caller after a transfer"),
        }
        Transferred::Connected {
            user: Some(user),
            dialog,
            contact,
        }
    }

    /// Consultation transfer (RFC 5589 §7): the call holding the replaced dialog hands
    /// its other side over to this call and hangs up on the transferring phone; the
    /// caller and the new party are re-INVITEd with each other's SDP.
    async fn attended_transfer(&self, replaces: Replaces) -> Transferred {
        let Some(other_call) = self.b2bua.consults_lock().get(&replaces.call_id).cloned() else {
            return Transferred::Failed(481);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let handover = Handover {
            replaces,
            states: self.state_sender.clone(),
            reply,
        };
        if other_call.send(handover).is_err() {
            return Transferred::Failed(481);
        }
        let takeover = match answer.await {
            Ok(Ok(takeover)) => takeover,
            Ok(Err(status)) => return Transferred::Failed(u16::from(status)),
            // That call ended meanwhile.
            Err(_) => return Transferred::Failed(481),
        };
        let (content_type, sdp) = takeover.sdp.unwrap_or_default();
        let headers = content_type
            .clone()
            .map(|ct| vec![Header::ContentType(ct.into())]);
        // The caller is offered the new party's last SDP; its answer is then offered to
        // the new party. Both had been talking to the transferring phone.
        let offer = (!sdp.is_empty()).then(|| self.sdp_for(Side::Callee, &sdp));
        match self.inbound.reinvite(headers, offer).await {
            Ok(Some(answer))
                if answer.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
            {
                self.note_sdp(&self.caller_call_id(), &answer.headers, &answer.body);
                let headers = super::content_type(&answer.headers)
                    .map(|ct| vec![Header::ContentType(ct.into())]);
                let body =
                    (!answer.body.is_empty()).then(|| self.sdp_for(Side::Caller, &answer.body));
                match takeover.dialog.reinvite(headers, body).await {
                    Ok(Some(response)) => {
                        self.note_sdp(
                            &takeover.dialog.id().call_id,
                            &response.headers,
                            &response.body,
                        );
                        self.sdp_for(Side::Callee, &response.body);
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(%err, "cannot re-INVITE the new party after a transfer");
                    }
                }
            }
            other => {
                // The new party is ours now either way; the media may not follow.
                let status = other.ok().flatten().map(|r| u16::from(r.status_code));
                tracing::warn!(?status, "the caller refused the re-INVITE after a transfer");
            }
        }
        Transferred::Connected {
            user: takeover.user,
            dialog: takeover.dialog,
            contact: takeover.contact,
        }
    }

    /// Rings the transfer target's devices in parallel; the first to answer takes the
    /// call, the others are cancelled.
    async fn ring_transfer(&self, target: UserId) -> Ringed {
        let devices = match self.b2bua.devices(std::slice::from_ref(&target)).await {
            Ok(mut devices) => devices.remove(&target).unwrap_or_default(),
            Err(err) => {
                tracing::error!(%err, "cannot read the transfer target's devices");
                return Ringed::Failed(500);
            }
        };
        let (done_sender, mut done) = mpsc::unbounded_channel::<(usize, Option<Response>)>();
        let mut dialogs = Vec::new();
        for (index, device) in devices
            .iter()
            .take(router::MAX_DEVICES_PER_USER)
            .enumerate()
        {
            let Ok((dialog, handle)) = self.invite_device(device).await else {
                continue;
            };
            self.extra_leg(&target, &device.contact);
            dialogs.push(dialog);
            let done = done_sender.clone();
            tokio::spawn(async move {
                let response = match handle.await {
                    Ok(Ok((_, response))) => response,
                    _ => None,
                };
                let _ = done.send((index, response));
            });
        }
        drop(done_sender);
        if dialogs.is_empty() {
            return Ringed::Failed(480);
        }
        let deadline = tokio::time::sleep(Duration::from_millis(self.plan.ring_timeout_ms));
        tokio::pin!(deadline);
        let mut last_status = 480;
        loop {
            tokio::select! {
                () = &mut deadline => break,
                next = done.recv() => match next {
                    Some((index, Some(response))) if response.status_code.kind()
                        == rsipstack::sip::StatusCodeKind::Successful =>
                    {
                        for (other, dialog) in dialogs.iter().enumerate() {
                            if other != index {
                                let dialog = dialog.clone();
                                tokio::spawn(async move { let _ = dialog.hangup().await; });
                            }
                        }
                        return Ringed::Answered {
                            user: target,
                            dialog: dialogs[index].clone(),
                            response,
                        };
                    }
                    Some((_, response)) => {
                        last_status = response.map_or(408, |r| u16::from(r.status_code));
                    }
                    None => return Ringed::Failed(last_status),
                },
            }
        }
        for dialog in dialogs {
            tokio::spawn(async move {
                let _ = dialog.hangup().await;
            });
        }
        Ringed::Failed(408)
    }

    /// The leg of a transfer's new party, unless ringing it already added one.
    pub(super) fn extra_leg_once(&self, user: &UserId, target: &str) {
        let rung = self
            .book
            .legs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(_, l)| l.state == "transfer" && &l.user == user);
        if !rung {
            self.extra_leg(user, target);
        }
    }

    /// A leg rung outside the plan (a transfer target), for the call's legs.
    pub(super) fn extra_leg(&self, user: &UserId, target: &str) {
        let mut legs = self.book.legs.lock().unwrap_or_else(|e| e.into_inner());
        let leg = (usize::MAX, legs.len());
        legs.push((
            leg,
            CallLeg {
                user: user.clone(),
                target: target.to_owned(),
                started_at: now_ms(),
                ended_at: None,
                state: "transfer".to_owned(),
                status: None,
            },
        ));
        self.b2bua.live.set(&self.call_id, snapshot(&legs));
    }

    /// T10: the call is now the target's; the store moves what the call created to them
    /// when the number says so.
    pub(super) async fn transferred_to(&self, user: &UserId) {
        {
            let mut legs = self.book.legs.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ms();
            for (_, leg) in legs.iter_mut() {
                if leg.state == "answered" && leg.ended_at.is_none() {
                    leg.ended_at = Some(now);
                    leg.state = "transferred".to_owned();
                }
            }
            if let Some((_, leg)) = legs
                .iter_mut()
                .rev()
                .find(|(_, l)| l.state == "transfer" && &l.user == user)
            {
                leg.state = "answered".to_owned();
            }
            for (_, leg) in legs.iter_mut() {
                if leg.state == "transfer" {
                    leg.state = "cancelled".to_owned();
                    leg.ended_at.get_or_insert(now);
                }
            }
            self.b2bua.live.set(&self.call_id, snapshot(&legs));
        }
        if let Err(err) = self
            .b2bua
            .store
            .call_transferred(&self.call_id, user, now_ms())
            .await
        {
            tracing::error!(%err, "cannot record the transfer");
        }
        self.publish("answered", Vec::new(), Some(user), None);
    }
}

/// What a REFER asks for.
pub(super) enum TransferPlan {
    Blind(UserId),
    Attended(Replaces),
}

/// How a transfer ended.
pub(super) enum Transferred {
    /// The caller talks to `dialog`'s party now: `user` when that is an employee.
    Connected {
        user: Option<UserId>,
        dialog: InviteDialog,
        /// Where the new party was reached, for the call's legs.
        contact: String,
    },
    /// The SIP status to report to the transferring phone.
    Failed(u16),
}

/// How ringing a blind transfer's target ended.
enum Ringed {
    Answered {
        user: UserId,
        dialog: InviteDialog,
        response: Response,
    },
    Failed(u16),
}

/// A consultation transfer asking the call that holds the replaced dialog for its
/// other side.
pub(crate) struct Handover {
    pub replaces: Replaces,
    /// Where the handed-over dialog's changes go from now on.
    pub states: rsipstack::dialog::dialog::DialogStateSender,
    pub reply: tokio::sync::oneshot::Sender<Result<Takeover, StatusCode>>,
}

/// The other side of a call, handed over to the call that takes it.
pub(crate) struct Takeover {
    pub dialog: InviteDialog,
    /// Its last SDP and content type.
    pub sdp: Option<(Option<String>, Vec<u8>)>,
    /// The employee it is, when it is one.
    pub user: Option<UserId>,
    pub contact: String,
}

/// What a `Refer-To` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReferTarget {
    /// Blind transfer to the user part of the URI (an extension or a number).
    Blind {
        user: String,
    },
    /// A consultation (attended) transfer: the URI carries `Replaces` (RFC 3891) naming
    /// the transferring phone's other call, whose far end takes this call's place.
    Attended {
        replaces: Replaces,
    },
    Unreadable,
}

/// A `Replaces` value (RFC 3891 §6.1): the dialog a consultation transfer replaces, as
/// the transferring phone sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
    /// `early-only`: replace the dialog only while it is still ringing.
    pub early_only: bool,
}

impl Replaces {
    /// Reads the decoded header value: `call-id;to-tag=..;from-tag=..[;early-only]`.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().filter(|c| !c.is_empty())?.to_owned();
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for part in parts {
            match part.split_once('=') {
                Some((name, tag)) if name.trim().eq_ignore_ascii_case("to-tag") => {
                    to_tag = Some(tag.trim().to_owned());
                }
                Some((name, tag)) if name.trim().eq_ignore_ascii_case("from-tag") => {
                    from_tag = Some(tag.trim().to_owned());
                }
                None if part.eq_ignore_ascii_case("early-only") => early_only = true,
                _ => {}
            }
        }
        Some(Self {
            call_id,
            to_tag: to_tag?,
            from_tag: from_tag?,
            early_only,
        })
    }

    /// Whether it names `dialog`: the same Call-ID and the same two tags, whichever side
    /// each is on (the phone's from-tag is our remote tag when it placed the call).
    pub(crate) fn names(&self, dialog: &rsipstack::dialog::DialogId) -> bool {
        dialog.call_id == self.call_id
            && ((dialog.local_tag == self.to_tag && dialog.remote_tag == self.from_tag)
                || (dialog.local_tag == self.from_tag && dialog.remote_tag == self.to_tag))
    }
}

/// Reads a `Refer-To` value: `<sip:102@host>`, a bare `sip:102@host;user=phone`, a
/// display name before the angle brackets, or a URI with embedded headers (`?Replaces=`).
pub(crate) fn refer_target(refer_to: &str) -> ReferTarget {
    let uri_text = refer_to
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(refer_to.trim(), |(uri, _)| uri.trim());
    let (uri_text, headers) = match uri_text.split_once('?') {
        Some((uri, headers)) => (uri, Some(headers)),
        None => (uri_text, None),
    };
    // URI headers (RFC 3261 §19.1.1) are escaped: `Replaces=abc%40host%3Bto-tag%3D1...`.
    if let Some(value) = headers
        .into_iter()
        .flat_map(|h| h.split('&'))
        .find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("replaces")
                .then_some(value)
        })
    {
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        return match Replaces::parse(&decoded) {
            Some(replaces) => ReferTarget::Attended { replaces },
            None => ReferTarget::Unreadable,
        };
    }
    match Uri::try_from(uri_text) {
        Ok(uri) => match uri.auth.map(|a| a.user).filter(|u| !u.is_empty()) {
            Some(user) => ReferTarget::Blind { user },
            None => ReferTarget::Unreadable,
        },
        Err(_) => ReferTarget::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Refer-To` lines of Asterisk test-suite scenarios (tests/data/sip-traces/
    /// asterisk/SOURCES.md), with SIPp's placeholders filled as SIPp would.
    fn refer_to_of(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/sip-traces/asterisk")
            .join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().to_ascii_lowercase().starts_with("refer-to:"))
            .expect("a Refer-To line");
        let value = line.split_once(':').unwrap().1.trim();
        value
            .replace("[transfer_target]", "102")
            .replace("[remote_ip]", "127.0.0.1")
            .replace("[remote_port]", "5060")
            .replace("[$remote_contact]", "sip:bob@127.0.0.1:5061")
            .replace("[$callid_chunk_1]", "abc")
            .replace("[$callid_chunk_2]", "127.0.0.1")
            .replace("[$remote_to_tag]", "t1")
            .replace("[$remote_from_tag]", "f1")
    }

    #[test]
    fn asterisk_blind_transfer_targets_are_read() {
        assert_eq!(
            refer_target(&refer_to_of("uas-blind-transfer.xml")),
            ReferTarget::Blind { user: "102".into() }
        );
        assert_eq!(
            refer_target(&refer_to_of("blind_transfer_caller_refer_only-alice.xml")),
            ReferTarget::Blind {
                user: "charlie".into()
            }
        );
    }

    #[test]
    fn an_attended_transfer_is_recognised_by_replaces() {
        assert_eq!(
            refer_target(&refer_to_of("attended_transfer_nominal-referer.xml")),
            ReferTarget::Attended {
                replaces: Replaces {
                    call_id: "REMOTEabc@127.0.0.1".into(),
                    to_tag: "t1".into(),
                    from_tag: "f1".into(),
                    early_only: false,
                }
            }
        );
    }

    #[test]
    fn replaces_names_a_dialog_from_either_side() {
        let replaces = Replaces::parse("abc@host;to-tag=gw;from-tag=phone").unwrap();
        let ours = |local: &str, remote: &str| rsipstack::dialog::DialogId {
            call_id: "abc@host".into(),
            local_tag: local.into(),
            remote_tag: remote.into(),
        };
        assert!(replaces.names(&ours("gw", "phone")));
        assert!(replaces.names(&ours("phone", "gw")));
        assert!(!replaces.names(&ours("gw", "other")));
        assert!(
            !Replaces::parse("other@host;to-tag=gw;from-tag=phone")
                .unwrap()
                .names(&ours("gw", "phone"))
        );
    }

    #[test]
    fn other_forms() {
        assert_eq!(
            refer_target("\"Ben\" <sip:102@gw.example;transport=udp>"),
            ReferTarget::Blind { user: "102".into() }
        );
        assert_eq!(refer_target("<sip:gw.example>"), ReferTarget::Unreadable);
        // Replaces without its tags cannot name a dialog.
        assert_eq!(
            refer_target("<sip:102@gw?Replaces=abc%40host>"),
            ReferTarget::Unreadable
        );
        assert_eq!(
            refer_target(
                "<sip:102@gw?Replaces=abc%40host%3Bfrom-tag%3Da%3Bto-tag%3Db%3Bearly-only>"
            ),
            ReferTarget::Attended {
                replaces: Replaces {
                    call_id: "abc@host".into(),
                    to_tag: "b".into(),
                    from_tag: "a".into(),
                    early_only: true,
                }
            }
        );
        assert_eq!(refer_target("not a uri"), ReferTarget::Unreadable);
    }
}
