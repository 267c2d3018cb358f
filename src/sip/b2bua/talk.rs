//! The talking phase of a call: BYE, re-INVITE and UPDATE relayed between the two
//! dialogs, and blind transfers started by the agent's phone.

use super::*;

impl Call {
    /// Connected: relays BYE and session refreshes between the two dialogs until one
    /// side hangs up, and carries out blind transfers (REFER) from the agent's phone.
    /// Returns who was talking to the caller at the end.
    pub(super) async fn talk(
        &self,
        states: &mut DialogStateReceiver,
        agent: &InviteDialog,
        user: Option<UserId>,
    ) -> Option<UserId> {
        let mut agent = agent.clone();
        let mut user = user;
        let mut backlog: std::collections::VecDeque<DialogState> =
            std::mem::take(&mut *self.book.deferred.lock().unwrap_or_else(|e| e.into_inner()))
                .into();
        let mut transfer: Option<Pin<Box<dyn Future<Output = Transferred> + Send + '_>>> = None;
        // A consultation transfer elsewhere may ask for this call's other side.
        let (handover_sender, mut handovers) = mpsc::unbounded_channel();
        let mut consult = ConsultEntry::new(&self.b2bua, handover_sender);
        let caller_call_id = self.caller_call_id();
        consult.add(&caller_call_id);
        consult.add(&agent.id().call_id);
        // The transferring phone may hang up as soon as its REFER is accepted.
        let mut referrer_gone = false;
        let mut initial_notify_due = false;
        // RFC 4028: the caller's next refresh is due by then, or the session has expired.
        let mut refresh_due = self.session_interval_s.map(|s| {
            tokio::time::Instant::now() + Duration::from_millis(session_timer::expiry_ms(s))
        });
        loop {
            let expiry = async {
                match refresh_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let pending_transfer = async {
                match transfer.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.media_dead() => {
                    tracing::warn!(
                        reason = "media timeout",
                        timeout_s = self.b2bua.media.as_ref().map(|m| m.timeout().as_secs()),
                        "no RTP or RTCP from either side; ending the call"
                    );
                    metrics::counter!("leadline_call_media_timeouts_total").increment(1);
                    let _ = agent.hangup().await;
                    let _ = self.inbound.bye().await;
                    return user;
                }
                () = expiry => {
                    tracing::info!("session expired without a refresh from the caller; ending the call");
                    metrics::counter!("leadline_call_session_expired_total").increment(1);
                    let _ = agent.hangup().await;
                    let _ = self.inbound.bye().await;
                    return user;
                }
                done = pending_transfer => {
                    transfer = None;
                    match done {
                        Transferred::Connected { user: target, dialog, contact } => {
                            if !referrer_gone {
                                // In the background: a phone slow to answer the NOTIFY
                                // must not hold up the call.
                                let referrer = agent.clone();
                                tokio::spawn(async move {
                                    let _ = referrer
                                        .notify_refer(StatusCode::OK, "terminated;reason=noresource")
                                        .await;
                                    let _ = referrer.hangup().await;
                                });
                            }
                            tracing::info!(from = ?user, to = ?target, "call transferred");
                            metrics::counter!("leadline_call_transfers_total", "result" => "answered")
                                .increment(1);
                            if let Some(target) = target {
                                self.extra_leg_once(&target, &contact);
                                self.transferred_to(&target).await;
                                user = Some(target);
                            }
                            self.book.transferred_dialogs
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(dialog.id());
                            consult.add(&dialog.id().call_id);
                            agent = dialog;
                            referrer_gone = false;
                        }
                        Transferred::Failed(status) => {
                            metrics::counter!("leadline_call_transfers_total", "result" => "failed")
                                .increment(1);
                            if referrer_gone {
                                // Nobody is left to talk to the caller.
                                let _ = self.inbound.bye().await;
                                return user;
                            }
                            let referrer = agent.clone();
                            tokio::spawn(async move {
                                let _ = referrer
                                    .notify_refer(
                                        StatusCode::from(status),
                                        "terminated;reason=noresource",
                                    )
                                    .await;
                            });
                        }
                    }
                }
                Some(handover) = handovers.recv() => {
                    if transfer.is_some() {
                        let _ = handover.reply.send(Err(StatusCode::RequestPending));
                        continue;
                    }
                    let replaces = &handover.replaces;
                    // The far side stays; the transferring phone's dialog is replaced.
                    let (replaced, remaining, remaining_user) = if names(replaces, &self.inbound.id()) {
                        // The agent's phone placed this call: the callee is an employee
                        // only on an internal call.
                        (self.inbound.clone(), agent.clone(), self.number.is_none().then(|| user.clone()).flatten())
                    } else if names(replaces, &agent.id()) {
                        (agent.clone(), self.inbound.clone(), None)
                    } else {
                        let _ = handover.reply.send(Err(StatusCode::CallTransactionDoesNotExist));
                        continue;
                    };
                    if replaces.early_only {
                        // RFC 3891 §3: early-only never replaces a confirmed dialog.
                        let _ = handover.reply.send(Err(StatusCode::BusyHere));
                        continue;
                    }
                    let remaining_id = remaining.id();
                    let sdp = self.book.sdp.lock().unwrap_or_else(|e| e.into_inner())
                        .get(&remaining_id.call_id).cloned();
                    let takeover = transfer::Takeover {
                        contact: remaining.initial_request().uri.to_string(),
                        dialog: remaining,
                        sdp,
                        user: remaining_user,
                    };
                    if handover.reply.send(Ok(takeover)).is_err() {
                        continue;
                    }
                    tracing::info!(remaining = %remaining_id, "call handed over to a consultation transfer");
                    *self.book.handed_over.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((remaining_id, handover.states));
                    // RFC 3891 §3: the replaced dialog is ended with a BYE.
                    tokio::spawn(async move { let _ = replaced.hangup().await; });
                    return user;
                }
                state = next_state(&mut backlog, states) => {
                    let Some(state) = state else { return user };
                    let agent_call_id = agent.id().call_id.clone();
                    match state {
                        DialogState::Terminated(id, reason) => {
                            tracing::debug!(?reason, dialog = %id, "a side ended the call");
                            if id.call_id == caller_call_id {
                                let _ = agent.hangup().await;
                                return user;
                            } else if id.call_id == agent_call_id {
                                if transfer.is_some() {
                                    referrer_gone = true;
                                    continue;
                                }
                                let _ = self.inbound.bye().await;
                                return user;
                            }
                            // else: a cancelled or replaced leg finishing
                        }
                        DialogState::Updated(id, request, handle) => {
                            // re-INVITE or UPDATE (session refresh, hold, codec change): ask
                            // the other side the same and give its answer back.
                            let from_caller = id.call_id == caller_call_id;
                            let other = if from_caller {
                                agent.clone()
                            } else {
                                self.inbound.clone()
                            };
                            // A refresh from the caller restarts the session timer, and the
                            // answer repeats the interval (RFC 4028 §9).
                            let timer = match self.session_interval_s {
                                Some(s) if from_caller => {
                                    refresh_due = Some(
                                        tokio::time::Instant::now()
                                            + Duration::from_millis(session_timer::expiry_ms(s)),
                                    );
                                    session_timer_headers(s)
                                }
                                _ => Vec::new(),
                            };
                            let from = if from_caller { Side::Caller } else { Side::Callee };
                            tokio::spawn(relay_update(
                                other,
                                request,
                                handle,
                                timer,
                                self.book.sdp.clone(),
                                self.media.session.clone().map(|m| (m, from)),
                            ));
                        }
                        DialogState::Refer(id, request, handle) if id.call_id == agent_call_id => {
                            match (transfer.is_none(), self.transfer_plan(&request).await) {
                                (true, Ok(plan)) => {
                                    let _ = handle.reply(StatusCode::Accepted).await;
                                    // The first NOTIFY waits for the 202 to be sent (the
                                    // dialog reports itself confirmed again then): phones
                                    // expect them in that order.
                                    initial_notify_due = true;
                                    transfer = Some(Box::pin(self.transfer(plan)));
                                }
                                (false, _) => {
                                    let _ = handle.reply(StatusCode::RequestPending).await;
                                }
                                (true, Err(status)) => {
                                    let _ = handle.reply(status).await;
                                }
                            }
                        }
                        DialogState::Confirmed(id, _)
                            if initial_notify_due && id.call_id == agent_call_id =>
                        {
                            // RFC 3515 §2.4.4: the implicit subscription starts with a
                            // NOTIFY of the current state.
                            initial_notify_due = false;
                            let referrer = agent.clone();
                            tokio::spawn(async move {
                                let _ = referrer
                                    .notify_refer(StatusCode::Trying, "active;expires=60")
                                    .await;
                            });
                        }
                        DialogState::Refer(_, _, handle) => {
                            // Only the agent's phone may transfer the call.
                            let _ = handle.reply(StatusCode::Forbidden).await;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Relays one re-INVITE or UPDATE to the other dialog and answers with its response.
pub(super) async fn relay_update(
    other: InviteDialog,
    request: rsipstack::sip::Request,
    handle: rsipstack::dialog::dialog::TransactionHandle,
    extra: Vec<Header>,
    sdp: Arc<super::SdpBook>,
    media: Option<(Arc<crate::media::MediaSession>, Side)>,
) {
    if let Ok(call_id) = request.call_id_header() {
        super::note_sdp(&sdp, call_id.value(), &request.headers, &request.body);
    }
    // Through the relay, each party's SDP names the gateway; the relay learns the party's.
    let rewrite = |from: Side, body: &[u8]| match &media {
        Some((session, _)) => session.sdp_from(from, body),
        None => body.to_vec(),
    };
    let from = media.as_ref().map_or(Side::Caller, |(_, from)| *from);
    let body = (!request.body.is_empty()).then(|| rewrite(from, &request.body));
    let headers = content_type(&request.headers).map(|ct| vec![Header::ContentType(ct.into())]);
    let response = if request.method == Method::Update {
        other.update(headers, body).await
    } else {
        other.reinvite(headers, body).await
    };
    match response {
        Ok(Some(response)) => {
            super::note_sdp(&sdp, &other.id().call_id, &response.headers, &response.body);
            let mut headers: Vec<Header> = content_type(&response.headers)
                .map(|ct| vec![Header::ContentType(ct.into())])
                .unwrap_or_default();
            if response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful {
                headers.extend(extra);
            }
            let body = (!response.body.is_empty()).then(|| rewrite(from.other(), &response.body));
            let _ = handle
                .respond(response.status_code, Some(headers), body)
                .await;
        }
        _ => {
            let _ = handle.reply(StatusCode::ServerInternalError).await;
        }
    }
}

/// The next dialog change: those kept back while ringing first, in order.
pub(super) async fn next_state(
    backlog: &mut std::collections::VecDeque<DialogState>,
    states: &mut DialogStateReceiver,
) -> Option<DialogState> {
    match backlog.pop_front() {
        Some(state) => Some(state),
        None => states.recv().await,
    }
}

/// What an answer says when the caller refreshes the session (RFC 4028 §9).
pub(super) fn session_timer_headers(interval_s: u32) -> Vec<Header> {
    vec![
        Header::Other(
            "Session-Expires".into(),
            format!("{interval_s};refresher=uac"),
        ),
        Header::Require("timer".into()),
    ]
}

/// This call's entries in [`B2bua::consults`], removed when the talking ends.
struct ConsultEntry<'a> {
    b2bua: &'a B2bua,
    sender: mpsc::UnboundedSender<transfer::Handover>,
    call_ids: Vec<String>,
}

impl<'a> ConsultEntry<'a> {
    fn new(b2bua: &'a B2bua, sender: mpsc::UnboundedSender<transfer::Handover>) -> Self {
        Self {
            b2bua,
            sender,
            call_ids: Vec::new(),
        }
    }

    fn add(&mut self, call_id: &str) {
        self.b2bua
            .consults_lock()
            .insert(call_id.to_owned(), self.sender.clone());
        self.call_ids.push(call_id.to_owned());
    }
}

impl Drop for ConsultEntry<'_> {
    fn drop(&mut self) {
        let mut consults = self.b2bua.consults_lock();
        for call_id in &self.call_ids {
            consults.remove(call_id);
        }
    }
}

fn names(replaces: &crate::sip::call::Replaces, id: &rsipstack::dialog::DialogId) -> bool {
    replaces.names(&id.call_id, &id.local_tag, &id.remote_tag)
}
