//! The bound on calls in set-up: a call holds one place from the moment its INVITE is
//! admitted until the caller has its final answer (2xx, or a refusal, a cancellation, a
//! failure). Past the bound a new INVITE is refused at once with 503, before any lookup,
//! so the calls already admitted keep the CPU and the database and finish normally
//! instead of every call slowing down together.
//!
//! A place is given back by whichever comes first: the final response to the INVITE
//! passing through the transaction layer ([`CallsInSetup::on_send`], called for every
//! message the endpoint sends), or the [`SetupTicket`] the call's task holds being
//! dropped (the call's handler returned or panicked without a final answer). The B2BUA
//! never sees either: it answers its `Transaction` as always.
//!
//! No I/O and no clock; the count is also published as the gauge
//! `leadline_sip_calls_in_setup`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rsipstack::sip::{HeadersExt as _, Method, Response, SipMessage, StatusCodeKind};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};

/// Calls in set-up at once when nothing is configured. Chosen from `bench/call-load`: the
/// gateway's clean rate (~660 calls/s, 2 cores) times the set-up of a call that rings a
/// phone answering at once (~0.15 s) is ~100 places; real calls ring people for up to
/// a ring timeout (20 s) and longer through a queue, so a busy site has hundreds of calls
/// ringing at a handful per second. 1,000 leaves them room and still refuses a flood
/// within ~1.5 s of work queued (1,000 / 660 per s), before callers' Timer B (32 s).
pub const DEFAULT_MAX_CALLS_IN_SETUP: usize = 1_000;

/// Why a new call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{limit} calls are in set-up already")]
pub struct Full {
    pub limit: usize,
}

/// Shared by the SIP server (admits) and the endpoint (sees final answers): cheap to clone.
#[derive(Clone)]
pub struct CallsInSetup {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    count: AtomicUsize,
    /// The INVITE server transactions holding a place. `count` mirrors its size so the
    /// check on admission and the one on every sent message need no lock.
    open: Mutex<HashSet<TransactionKey>>,
}

/// Held by the task that handles an admitted call; gives the place back when dropped if
/// the final answer has not done so already.
#[must_use = "the call's place is given back when the ticket is dropped"]
pub struct SetupTicket {
    calls: CallsInSetup,
    key: TransactionKey,
    /// False for a duplicate key (the place is the first ticket's).
    owns: bool,
}

impl std::fmt::Debug for SetupTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupTicket")
            .field("key", &self.key.to_string())
            .field("owns", &self.owns)
            .finish()
    }
}

impl CallsInSetup {
    /// At most `limit` calls in set-up at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                count: AtomicUsize::new(0),
                open: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Calls in set-up now.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// A place for the INVITE server transaction `key`, or [`Full`] past the bound.
    pub fn admit(&self, key: &TransactionKey) -> Result<SetupTicket, Full> {
        let limit = self.inner.limit;
        self.inner
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Full { limit })?;
        let fresh = self.open().insert(key.clone());
        if !fresh {
            // The transaction layer absorbs retransmissions, so this is not expected;
            // counting it twice would leak a place.
            self.inner.count.fetch_sub(1, Ordering::AcqRel);
        }
        self.publish();
        Ok(SetupTicket {
            calls: self.clone(),
            key: key.clone(),
            owns: fresh,
        })
    }

    /// Called for every message the endpoint sends: a final response to an INVITE that
    /// holds a place gives it back (the caller has its answer).
    pub fn on_send(&self, message: &SipMessage) {
        if self.count() == 0 {
            return;
        }
        if let SipMessage::Response(response) = message
            && let Some(key) = answered_invite(response)
        {
            self.release(&key);
        }
    }

    fn release(&self, key: &TransactionKey) {
        if self.open().remove(key) {
            self.inner.count.fetch_sub(1, Ordering::AcqRel);
            self.publish();
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashSet<TransactionKey>> {
        self.inner.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self) {
        metrics::gauge!("leadline_sip_calls_in_setup").set(self.count() as f64);
    }
}

impl Drop for SetupTicket {
    fn drop(&mut self) {
        if self.owns {
            self.calls.release(&self.key);
        }
    }
}

/// The server transaction a final response to an INVITE ends, if it is one.
fn answered_invite(response: &Response) -> Option<TransactionKey> {
    if matches!(response.status_code.kind(), StatusCodeKind::Provisional) {
        return None;
    }
    if response.cseq_header().ok()?.method().ok()? != Method::Invite {
        return None;
    }
    TransactionKey::from_response(response, TransactionRole::Server).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::Request;

    fn invite(call_id: &str) -> Request {
        Request::try_from(
            format!(
                "INVITE sip:+4930901820@gw.example.com SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{call_id};received=192.0.2.1;rport=5060\r\n\
                 From: <sip:+4917612345678@carrier.example>;tag=abc\r\n\
                 To: <sip:+4930901820@gw.example.com>\r\n\
                 Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            .as_str(),
        )
        .expect("parses")
    }

    fn key(request: &Request) -> TransactionKey {
        TransactionKey::from_request(request, TransactionRole::Server).expect("a key")
    }

    /// A response to `call_id`'s INVITE (or to another method's request).
    fn response(call_id: &str, status: u16, method: &str) -> SipMessage {
        let reason = match status {
            100 => "Trying",
            180 => "Ringing",
            200 => "OK",
            _ => "Whatever",
        };
        SipMessage::try_from(
            format!(
                "SIP/2.0 {status} {reason}\r\n\
                 Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{call_id};received=192.0.2.1;rport=5060\r\n\
                 From: <sip:+4917612345678@carrier.example>;tag=abc\r\n\
                 To: <sip:+4930901820@gw.example.com>;tag=gw1\r\n\
                 Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_str(),
        )
        .expect("parses")
    }

    #[test]
    fn past_the_bound_a_call_is_refused_until_one_in_set_up_has_its_answer() {
        let calls = CallsInSetup::new(2);
        let (a, b, c) = (invite("a"), invite("b"), invite("c"));
        let _first = calls.admit(&key(&a)).expect("first admitted");
        let _second = calls.admit(&key(&b)).expect("second admitted");
        assert_eq!(calls.admit(&key(&c)).unwrap_err(), Full { limit: 2 });
        assert_eq!(calls.count(), 2);
        calls.on_send(&response("a", 200, "INVITE"));
        assert_eq!(
            calls.count(),
            1,
            "the 200 to the first caller gave its place back"
        );
        let _third = calls
            .admit(&key(&c))
            .expect("admitted once a place is free");
    }

    /// Which messages give a call's place back: only a final answer to that INVITE.
    #[test]
    fn only_a_final_answer_to_the_admitted_invite_ends_its_set_up() {
        let cases: &[(&str, u16, &str, bool)] = &[
            ("a", 100, "INVITE", false),
            ("a", 180, "INVITE", false),
            ("a", 183, "INVITE", false),
            ("a", 200, "INVITE", true),
            ("a", 486, "INVITE", true),
            ("a", 487, "INVITE", true),
            ("a", 503, "INVITE", true),
            ("a", 200, "BYE", false),
            ("a", 200, "CANCEL", false),
            ("other", 200, "INVITE", false),
        ];
        for &(call_id, status, method, releases) in cases {
            let calls = CallsInSetup::new(5);
            let _ticket = calls.admit(&key(&invite("a"))).unwrap();
            calls.on_send(&response(call_id, status, method));
            let expected = if releases { 0 } else { 1 };
            assert_eq!(calls.count(), expected, "{status} to {method} of {call_id}");
        }
    }

    #[test]
    fn a_call_that_ends_without_a_final_answer_gives_its_place_back_once() {
        let calls = CallsInSetup::new(1);
        let a = invite("a");
        let ticket = calls.admit(&key(&a)).unwrap();
        calls.on_send(&response("a", 200, "INVITE"));
        // The answer already released it: a new call takes the place, and dropping the
        // first ticket must not free the new call's place too.
        let _next = calls.admit(&key(&invite("b"))).unwrap();
        drop(ticket);
        assert_eq!(calls.count(), 1);
        let calls = CallsInSetup::new(1);
        let ticket = calls.admit(&key(&a)).unwrap();
        drop(ticket);
        assert_eq!(calls.count(), 0, "dropped without an answer");
    }

    #[test]
    fn a_duplicate_key_holds_no_second_place() {
        let calls = CallsInSetup::new(3);
        let a = invite("a");
        let first = calls.admit(&key(&a)).unwrap();
        let second = calls.admit(&key(&a)).unwrap();
        assert_eq!(calls.count(), 1);
        drop(second);
        assert_eq!(calls.count(), 1, "the duplicate's ticket owns nothing");
        drop(first);
        assert_eq!(calls.count(), 0);
    }
}
