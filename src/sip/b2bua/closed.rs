//! When nobody will answer: outside the number's working hours, or when the queue did
//! not pick up, the number's after-hours rule applies (voicemail, forward, reject).

use super::*;
use crate::crm::hours::{AfterHoursAction, Closed, reject_status};
use crate::media::voicemail::{self, VoicemailError};
use crate::store::StoredRecording;

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
        tracing::info!(?why, ?action, "nobody will answer: the number's after-hours rule");
        match action {
            Some(AfterHoursAction::Voicemail) => self.voicemail(states).await,
            Some(AfterHoursAction::Forward) => {
                // Forwarding through the trunk is not built yet: the caller hears that
                // nobody is available rather than waiting for nothing.
                tracing::warn!("after-hours forwarding is not supported yet; rejecting");
                self.reject(reject_status(why));
                None
            }
            Some(AfterHoursAction::Reject) | None => {
                self.reject(reject_status(why));
                None
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
        if let Err(err) = self.inbound.accept(Some(headers), Some(line.answer.clone())) {
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
