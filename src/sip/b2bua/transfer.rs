//! Blind transfer (REFER from the agent's phone, RFC 3515) and T10.

use super::*;
use crate::sip::call::{ReferTarget, Replaces, refer_target};

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
