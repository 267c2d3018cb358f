//! When nobody will answer: outside the number's working hours, or when the queue did
//! not pick up, the number's after-hours rule applies (voicemail, forward, reject).

use super::*;
use crate::crm::hours::{AfterHoursAction, Closed, reject_status};
use crate::media::voicemail::{self, VoicemailError};
use crate::store::StoredRecording;

/// How long a forwarded call may ring out before the caller is told nobody answers.
const FORWARD_RING_S: u64 = 60;

impl Call {
    /// The number is outside its working hours now.
    pub(super) fn closed_now(&self) -> bool {
        self.number.is_some()
            && self
                .media
                .settings
                .hours
                .as_ref()
                .is_some_and(|hours| !hours.is_open(chrono::Utc::now()))
    }

    /// Whether the rule keeps the caller on the line when the queue gives up (voicemail
    /// or forward) instead of turning the call away.
    pub(super) fn rule_takes_over(&self) -> bool {
        self.number.is_some()
            && self
                .media
                .settings
                .after_hours
                .as_ref()
                .is_some_and(|rule| rule.action != AfterHoursAction::Reject)
    }

    /// Applies the after-hours rule to a caller still waiting for an answer. Returns the
    /// voicemail message, if the caller left one.
    pub(super) async fn closed(
        &self,
        why: Closed,
        states: &mut DialogStateReceiver,
    ) -> Option<StoredRecording> {
        let action = self.media.settings.after_hours.as_ref().map(|r| r.action);
        tracing::info!(
            ?why,
            ?action,
            "nobody will answer: the number's after-hours rule"
        );
        match action {
            Some(AfterHoursAction::Voicemail) => self.voicemail(states).await,
            Some(AfterHoursAction::Reject | AfterHoursAction::Forward) | None => {
                self.reject(reject_status(why));
                None
            }
        }
    }

    /// The rule forwards the call through the number's trunk.
    pub(super) fn forwards(&self) -> bool {
        self.number.is_some()
            && self
                .media
                .settings
                .after_hours
                .as_ref()
                .is_some_and(|rule| rule.action == AfterHoursAction::Forward)
    }

    /// Forwards the waiting caller to the rule's number out through the number's trunk,
    /// showing the caller's own number. The far side's ringing and early media reach the
    /// caller; its answer connects them. `None` when it did not answer (the caller has
    /// been answered with a final refusal then) or the caller gave up.
    pub(super) async fn forward(&self, states: &mut DialogStateReceiver) -> Option<InviteDialog> {
        let unavailable = reject_status(Closed::NobodyAnswered);
        let number = self.number.as_ref()?;
        let Some(target) = self
            .media
            .settings
            .after_hours
            .as_ref()
            .and_then(|rule| rule.forward_to.clone())
        else {
            self.reject(unavailable);
            return None;
        };
        let trunk = match self.b2bua.store.get_number(&number.id).await {
            Ok(record) => match record.trunk {
                Some(trunk) => self.b2bua.store.get_trunk(&trunk).await.ok(),
                None => None,
            },
            Err(_) => None,
        };
        let Some(trunk) = trunk else {
            tracing::warn!("forwarding needs the number's trunk; rejecting");
            self.reject(unavailable);
            return None;
        };
        let leg = match self
            .b2bua
            .carrier_leg(&trunk, &target, &self.customer)
            .await
        {
            Ok(Ok(leg)) => leg,
            Ok(Err((status, why))) => {
                tracing::warn!(why, "cannot forward the call");
                self.reject(u16::from(status));
                return None;
            }
            Err(err) => {
                tracing::error!(%err, "cannot forward the call");
                self.reject(500);
                return None;
            }
        };
        tracing::info!(to = %target, trunk = %trunk.name, "forwarding the call");
        metrics::counter!("leadline_call_forwards_total").increment(1);
        let option = InviteOption {
            caller: Uri::try_from(format!("sip:{}@{}", leg.caller_id, leg.host).as_str()).ok()?,
            callee: Uri::try_from(leg.device.contact.as_str()).ok()?,
            destination: destination(&leg.device),
            content_type: self.content_type.clone(),
            offer: (!self.offer.is_empty()).then(|| self.sdp_for(Side::Caller, &self.offer)),
            contact: self.b2bua.contact_uri(),
            credential: leg.credential.clone(),
            ..InviteOption::default()
        };
        let started = self
            .b2bua
            .send_invite(option, &leg.device, self.state_sender.clone())
            .await;
        let (dialog, handle) = match started {
            Ok(started) => started,
            Err(err) => {
                tracing::warn!(%err, "cannot send the forwarded call");
                self.reject(503);
                return None;
            }
        };
        let forward_call_id = dialog.id().call_id.clone();
        let deadline = tokio::time::sleep(Duration::from_secs(FORWARD_RING_S));
        tokio::pin!(deadline, handle);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    let _ = dialog.hangup().await;
                    self.reject(unavailable);
                    return None;
                }
                done = &mut handle => {
                    let response = match done {
                        Ok(Ok((_, response))) => response,
                        _ => None,
                    };
                    let Some(response) = response.filter(|r| {
                        r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
                    }) else {
                        self.reject(unavailable);
                        return None;
                    };
                    self.note_sdp(&forward_call_id, &response.headers, &response.body);
                    let headers = content_type(&response.headers)
                        .map(|ct| vec![Header::ContentType(ct.into())])
                        .unwrap_or_default();
                    let answer = self.sdp_for(Side::Callee, &response.body);
                    if self.inbound.accept(Some(headers), Some(answer)).is_err() {
                        let _ = dialog.hangup().await;
                        return None;
                    }
                    self.media_answered();
                    self.event(CallEventKind::Answered, None, None).await;
                    return Some(dialog);
                }
                state = states.recv() => match state {
                    Some(DialogState::Early(id, response)) if id.call_id == forward_call_id => {
                        let headers = content_type(&response.headers)
                            .map(|ct| vec![Header::ContentType(ct.into())]);
                        let body = (!response.body.is_empty())
                            .then(|| self.sdp_for(Side::Callee, &response.body));
                        let _ = self.inbound.ringing(headers, body);
                    }
                    Some(DialogState::Terminated(id, _)) if id.call_id == self.call_id => {
                        // The caller gave up.
                        let _ = dialog.hangup().await;
                        return None;
                    }
                    None => return None,
                    _ => {}
                },
            }
        }
    }

    fn reject(&self, status: u16) {
        let _ = self.inbound.reject(Some(StatusCode::from(status)), None);
    }

    /// Answers the caller, plays the greeting and the tone, and records the message.
    async fn voicemail(&self, states: &mut DialogStateReceiver) -> Option<StoredRecording> {
        let Some(engine) = self.b2bua.media.clone() else {
            self.reject(480);
            return None;
        };
        let line = match voicemail::answer(&engine, &self.offer) {
            Ok(line) => line,
            Err(VoicemailError::NoCodec) => {
                self.reject(488);
                return None;
            }
            Err(err) => {
                tracing::error!(%err, "cannot take a voicemail message");
                self.reject(503);
                return None;
            }
        };
        let headers = vec![Header::ContentType("application/sdp".into())];
        if let Err(err) = self
            .inbound
            .accept(Some(headers), Some(line.answer.clone()))
        {
            tracing::warn!(%err, "cannot answer the caller for voicemail");
            return None;
        }
        let greeting = self.greeting().await;
        let dir = self.b2bua.data_dir.join(RECORDINGS_DIR);
        if let Err(err) = tokio::fs::create_dir_all(&dir).await {
            tracing::error!(%err, "cannot create the recordings folder");
            let _ = self.inbound.bye().await;
            return None;
        }
        let file = format!("{}.wav", uuid::Uuid::now_v7());
        let max = Duration::from_secs(u64::from(
            self.media
                .settings
                .after_hours
                .as_ref()
                .map_or(120, |r| r.max_message_s),
        ));
        let call_id = self.call_id.clone();
        let hung_up = async move {
            loop {
                match states.recv().await {
                    Some(DialogState::Terminated(id, _)) if id.call_id == call_id => return,
                    None => return,
                    _ => {}
                }
            }
        };
        let message = voicemail::take_message(line, greeting, max, &dir.join(&file), hung_up).await;
        // At the length limit the gateway hangs up; after the caller's BYE this is a no-op.
        let _ = self.inbound.bye().await;
        match message {
            Ok(Some(summary)) if summary.samples > 0 => {
                metrics::counter!("leadline_voicemail_messages_total").increment(1);
                Some(StoredRecording {
                    file,
                    duration_ms: summary.duration_ms,
                    voicemail: true,
                })
            }
            Ok(_) => {
                let _ = tokio::fs::remove_file(dir.join(&file)).await;
                None
            }
            Err(err) => {
                tracing::error!(%err, "voicemail recording failed");
                let _ = tokio::fs::remove_file(dir.join(&file)).await;
                None
            }
        }
    }

    /// The number's greeting, if one was uploaded and still reads.
    async fn greeting(&self) -> Option<crate::media::greeting::Greeting> {
        let file = self.media.settings.greeting.as_ref()?;
        let path = self.b2bua.data_dir.join(GREETINGS_DIR).join(file);
        let bytes = tokio::fs::read(&path).await.ok()?;
        crate::media::greeting::Greeting::from_wav(&bytes)
            .map_err(|err| tracing::warn!(%err, "the stored greeting does not read"))
            .ok()
    }
}
