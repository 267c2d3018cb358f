//! Blind transfer (REFER from the agent's phone, RFC 3515) and T10.

use super::*;

impl Call {
    /// The employee a REFER names in `Refer-To` by extension (blind transfer).
    pub(super) async fn transfer_target(
        &self,
        request: &rsipstack::sip::Request,
    ) -> Result<UserId, StatusCode> {
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
            // A consultation transfer needs the consult call bridged in, which is not
            // built yet: refused rather than turned into a blind one.
            ReferTarget::Attended => return Err(StatusCode::NotImplemented),
            ReferTarget::Unreadable => return Err(StatusCode::BadRequest),
        };
        // Transfers to outside numbers go out through a trunk, which the gateway does
        // not do yet: refused rather than half-done.
        match self.b2bua.store.sip_credentials(&extension).await {
            Ok(Some(credentials)) => Ok(credentials.user),
            Ok(None) => Err(StatusCode::NotFound),
            Err(err) => {
                tracing::error!(%err, "cannot look up the transfer target");
                Err(StatusCode::ServerInternalError)
            }
        }
    }

    /// Rings the transfer target's devices in parallel; the first to answer takes the
    /// call, the others are cancelled.
    pub(super) async fn ring_transfer(&self, target: UserId) -> Transferred {
        let devices = match self.b2bua.devices(std::slice::from_ref(&target)).await {
            Ok(mut devices) => devices.remove(&target).unwrap_or_default(),
            Err(err) => {
                tracing::error!(%err, "cannot read the transfer target's devices");
                return Transferred::Failed(500);
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
            return Transferred::Failed(480);
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
                        return Transferred::Answered {
                            user: target,
                            dialog: dialogs[index].clone(),
                            response,
                        };
                    }
                    Some((_, response)) => {
                        last_status = response.map_or(408, |r| u16::from(r.status_code));
                    }
                    None => return Transferred::Failed(last_status),
                },
            }
        }
        for dialog in dialogs {
            tokio::spawn(async move {
                let _ = dialog.hangup().await;
            });
        }
        Transferred::Failed(408)
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

/// How a blind transfer ended.
pub(super) enum Transferred {
    Answered {
        user: UserId,
        dialog: InviteDialog,
        response: Response,
    },
    /// The SIP status to report to the transferring phone.
    Failed(u16),
}

/// What a `Refer-To` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReferTarget {
    /// Blind transfer to the user part of the URI (an extension or a number).
    Blind {
        user: String,
    },
    /// A consultation (attended) transfer: the URI carries `Replaces` (RFC 3891).
    Attended,
    Unreadable,
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
    if headers.is_some_and(|h| {
        h.split('&').any(|p| {
            p.split('=')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("replaces"))
        })
    }) {
        return ReferTarget::Attended;
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
            ReferTarget::Attended
        );
    }

    #[test]
    fn other_forms() {
        assert_eq!(
            refer_target("\"Ben\" <sip:102@gw.example;transport=udp>"),
            ReferTarget::Blind { user: "102".into() }
        );
        assert_eq!(refer_target("<sip:gw.example>"), ReferTarget::Unreadable);
        assert_eq!(refer_target("not a uri"), ReferTarget::Unreadable);
    }
}
