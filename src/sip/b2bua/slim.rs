//! A confirmed dialog, rebuilt without what its set-up left in it.
//!
//! rsipstack's dialog keeps, for its whole life, a sender into its INVITE transaction's
//! channel (so the channel's first block of 32 transaction events, about 11 KiB, lives
//! as long as the call), the whole initial INVITE with its SDP, and the last response
//! (the 200 with its SDP) in its state. None of it is used once the ACK has passed: the
//! INVITE transaction is answered, and in-dialog requests are built from the dialog's
//! tags, CSeq numbers, route set and remote target. So once a leg is confirmed the
//! driver swaps its dialog for one made from those alone (rsipstack's own snapshot and
//! public constructor, as its restore after a restart does) and files it with the
//! calls' own dialogs; the old one goes once its INVITE transaction has ended (RFC 6026:
//! up to 32 s after the 2xx for the calling side). The rebuilt dialog reports its
//! changes through the [`super::registry`], routed by its Call-ID to the call's inbox,
//! so that the call can let its own dialog-state channel go.
//!
//! Only dialogs over UDP are rebuilt: a dialog over a TCP flow keeps that flow (its
//! connection is not public), and neither are dialogs with an RFC 7989 Session-ID (a
//! rebuilt UAS dialog would draw a new local UUID).

use std::sync::{Arc, OnceLock};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogInner, DialogState};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::headers::untyped::ToTypedHeader as _;
use rsipstack::sip::{Header, Request, Response, Transport};
use rsipstack::transaction::transaction::TransactionEventSender;

use super::B2bua;
use super::driver::InboxSender;
use super::registry::CallToken;

/// The rebuilt dialogs' way to the INVITE transaction, which they no longer have: one
/// sender for the process, its receiver dropped. rsipstack sends on it only to answer
/// or acknowledge an INVITE still in set-up, never for a confirmed dialog; a send there
/// would fail, not queue.
fn no_transaction() -> TransactionEventSender {
    static CLOSED: OnceLock<TransactionEventSender> = OnceLock::new();
    CLOSED
        .get_or_init(|| tokio::sync::mpsc::unbounded_channel().0)
        .clone()
}

/// The headers a confirmed dialog reads from its initial request: the constructor wants
/// From, To, Call-ID, CSeq and (as the UAS) the Contact; the top Via is the last-resort
/// way back to a UAS's peer.
fn trimmed(request: &Request) -> Request {
    let headers: Vec<Header> = request
        .headers
        .iter()
        .filter(|h| {
            matches!(
                h,
                Header::From(_)
                    | Header::To(_)
                    | Header::CallId(_)
                    | Header::CSeq(_)
                    | Header::Contact(_)
            )
        })
        .cloned()
        .chain(
            request
                .headers
                .iter()
                .find(|h| matches!(h, Header::Via(_)))
                .cloned(),
        )
        .collect();
    Request {
        method: request.method,
        uri: request.uri.clone(),
        version: request.version,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// Whether a message's top Via names UDP.
fn over_udp(request: &Request) -> bool {
    request.headers.iter().find_map(|h| match h {
        Header::Via(via) => Some(via.typed().is_ok_and(|v| v.transport == Transport::Udp)),
        _ => None,
    }) == Some(true)
}

impl B2bua {
    /// `dialog` rebuilt as described in the module docs and filed in its place, or `None`
    /// when it is left as it is (not confirmed, not over UDP, set up over our own flow,
    /// with a Session-ID). `credential` is the one the leg was sent with; the changes of
    /// the rebuilt dialog reach `call`'s `inbox`.
    pub(super) fn slim(
        &self,
        dialog: &InviteDialog,
        credential: Option<Credential>,
        call: CallToken,
        inbox: &InboxSender,
    ) -> Option<InviteDialog> {
        if !matches!(dialog.state(), DialogState::Confirmed(..)) {
            return None;
        }
        let snapshot = dialog.snapshot();
        let key = snapshot.id.to_string();
        if snapshot.session_id.is_some() || self.own_dialog(&key) {
            return None;
        }
        let initial = dialog.initial_request();
        if !over_udp(&initial) {
            return None;
        }
        let inner = DialogInner::new(
            snapshot.role,
            snapshot.id.clone(),
            trimmed(&initial),
            self.dialogs.endpoint.clone(),
            self.calls.states(),
            credential,
            snapshot.local_contact.clone(),
            no_transaction(),
        )
        .ok()?;
        *inner.state.lock() = DialogState::Confirmed(snapshot.id.clone(), Response::default());
        inner
            .local_seq
            .store(snapshot.local_cseq, std::sync::atomic::Ordering::Relaxed);
        inner
            .remote_seq
            .store(snapshot.remote_cseq, std::sync::atomic::Ordering::Relaxed);
        *inner.remote_uri.lock() = snapshot.remote_uri;
        *inner.remote_contact.lock() = snapshot.remote_contact;
        *inner.to.lock() = snapshot.to;
        *inner.route_set.lock() = snapshot.route_set;
        let slim = InviteDialog::from_inner(Arc::new(inner));
        // The route before the dialog can be found: its first change must find it. Then
        // ours before out of the layer: a request in between finds one of the two.
        self.calls.route(call, &snapshot.id.call_id, inbox);
        self.own_dialogs_insert(key, slim.clone());
        self.dialogs.remove_dialog(&snapshot.id);
        Some(slim)
    }

    fn own_dialog(&self, key: &str) -> bool {
        self.own_dialogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }
}
