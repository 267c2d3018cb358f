//! What a request must satisfy before its method's handler sees it (RFC 3261 §8.2.2,
//! §16.3): required extensions we do not support (420), hop exhaustion for requests we
//! would forward (483), and loops (482), both a request carrying our own Via and a
//! request merged back to us over two paths.
//!
//! Pure: the caller gives the clock and keeps the [`MergeTracker`]. The bound on calls in
//! set-up (503 past it) is [`setup`]; refusing new calls in the receive loop while the
//! gateway is behind is [`shed`].

use std::collections::HashMap;
use std::net::SocketAddr;

use rsipstack::sip::headers::untyped::ToTypedHeader as _;
use rsipstack::sip::{Header, HeadersExt as _, Method, Request};

pub mod setup;
pub mod shed;

/// Option-tags (RFC 3261 §19.2) this gateway implements; a `Require` naming anything
/// else is refused with 420.
pub const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// Why a request is turned away before its handler, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 420 Bad Extension; the unsupported tags go into `Unsupported`.
    BadExtension(Vec<String>),
    /// 483 Too Many Hops.
    TooManyHops,
    /// 482 Loop Detected, with the reason for the Warning header.
    LoopDetected(&'static str),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadExtension(_) => 420,
            Refusal::TooManyHops => 483,
            Refusal::LoopDetected(_) => 482,
        }
    }

    /// The `reason` label of `leadline_sip_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::BadExtension(_) => "bad_extension",
            Refusal::TooManyHops => "too_many_hops",
            Refusal::LoopDetected(_) => "loop",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Refusal::BadExtension(tags) => format!("unsupported extension {}", tags.join(", ")),
            Refusal::TooManyHops => "Max-Forwards is 0 and this request would be forwarded".into(),
            Refusal::LoopDetected(why) => (*why).to_owned(),
        }
    }
}

/// The checks that need no state. `own` are the addresses our Via headers carry as
/// sent-by: a request that already passed through us has come back (§16.3 step 4).
pub fn check(request: &Request, own: &[SocketAddr]) -> Result<(), Refusal> {
    let method = request.method();
    // ACK and CANCEL cannot be refused with a response of their own (§8.2.2.3, §9.2).
    if matches!(method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    let unsupported = unsupported_required(request);
    if !unsupported.is_empty() {
        return Err(Refusal::BadExtension(unsupported));
    }
    if is_forwarded(request) {
        if max_forwards(request) == Some(0) {
            return Err(Refusal::TooManyHops);
        }
        if carries_own_via(request, own) {
            return Err(Refusal::LoopDetected("the request carries our own Via"));
        }
    }
    Ok(())
}

/// A B2BUA forwards only the dialog-creating INVITE to another hop; OPTIONS, REGISTER and
/// in-dialog requests end here, and an endpoint answers them whatever Max-Forwards says
/// (RFC 4475 §3.3.7).
fn is_forwarded(request: &Request) -> bool {
    *request.method() == Method::Invite && to_tag(request).is_none()
}

fn max_forwards(request: &Request) -> Option<u32> {
    request.headers.iter().find_map(|h| match h {
        Header::MaxForwards(v) => v.value().trim().parse().ok(),
        _ => None,
    })
}

fn unsupported_required(request: &Request) -> Vec<String> {
    request
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Require(v) => Some(v.value().to_owned()),
            _ => None,
        })
        .flat_map(|value| {
            value
                .split(',')
                .map(|tag| tag.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|tag| {
            !tag.is_empty()
                && !SUPPORTED_EXTENSIONS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(tag))
        })
        .collect()
}

fn carries_own_via(request: &Request, own: &[SocketAddr]) -> bool {
    if own.is_empty() {
        return false;
    }
    request.headers.iter().any(|h| match h {
        Header::Via(via) => via.value().split(',').any(|one| {
            sent_by(one).is_some_and(|(host, port)| {
                own.iter()
                    .any(|addr| port == addr.port() && host == addr.ip().to_string())
            })
        }),
        _ => false,
    })
}

/// `SIP/2.0/UDP host:port;params` → (host, port); the port defaults to 5060. IPv6
/// references lose their brackets so they compare with `IpAddr`'s text.
fn sent_by(via: &str) -> Option<(String, u16)> {
    let rest = via.split_whitespace().nth(1)?;
    let sent_by = rest.split(';').next()?.trim();
    let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match sent_by.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (sent_by, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5060,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn to_tag(request: &Request) -> Option<String> {
    request
        .to_header()
        .ok()?
        .typed()
        .ok()?
        .tag()
        .map(|t| t.to_string())
}

/// The identity of a request outside a dialog for merge detection (§8.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MergeKey {
    from_tag: String,
    call_id: String,
    cseq: String,
}

/// Remembers recent out-of-dialog requests so that one arriving a second time over
/// another path (same From tag, Call-ID and CSeq, a different top Via branch) is refused
/// with 482 instead of being processed twice (§8.2.2.2).
#[derive(Debug, Default)]
pub struct MergeTracker {
    seen: HashMap<MergeKey, (String, i64)>,
    last_sweep: i64,
}

/// Transactions live at most 64·T1 = 32 s (§17); a branch older than that is not merged.
const MERGE_WINDOW_MS: i64 = 32_000;
/// Bounded memory under a flood: past this the oldest half is forgotten.
const MERGE_CAPACITY: usize = 100_000;

impl MergeTracker {
    /// Records the request; `Err` when it is a merged copy of one seen recently.
    pub fn observe(&mut self, request: &Request, now_ms: i64) -> Result<(), Refusal> {
        if matches!(request.method(), Method::Ack | Method::Cancel) || to_tag(request).is_some() {
            return Ok(());
        }
        let Some((key, branch)) = merge_key(request) else {
            return Ok(());
        };
        self.sweep(now_ms);
        match self.seen.get(&key) {
            Some((seen_branch, at)) if now_ms - at < MERGE_WINDOW_MS => {
                if *seen_branch == branch {
                    Ok(()) // a retransmission, absorbed by the transaction layer
                } else {
                    Err(Refusal::LoopDetected(
                        "merged request: this request already arrived by another path",
                    ))
                }
            }
            _ => {
                self.seen.insert(key, (branch, now_ms));
                Ok(())
            }
        }
    }

    fn sweep(&mut self, now_ms: i64) {
        if now_ms - self.last_sweep < 1_000 && self.seen.len() < MERGE_CAPACITY {
            return;
        }
        self.last_sweep = now_ms;
        self.seen
            .retain(|_, (_, at)| now_ms - *at < MERGE_WINDOW_MS);
        if self.seen.len() >= MERGE_CAPACITY {
            let mut ages: Vec<i64> = self.seen.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.seen.retain(|_, (_, at)| *at > cutoff);
        }
    }
}

fn merge_key(request: &Request) -> Option<(MergeKey, String)> {
    let from_tag = request.from_header().ok()?.typed().ok()?.tag()?.to_string();
    let call_id = request.call_id_header().ok()?.value().to_owned();
    let cseq = request.cseq_header().ok()?.value().trim().to_owned();
    let via = request.via_header().ok()?.value().to_owned();
    let branch = via
        .split(',')
        .next()?
        .split(';')
        .skip(1)
        .find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("branch")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Some((
        MergeKey {
            from_tag,
            call_id,
            cseq,
        },
        branch,
    ))
}

#[cfg(test)]
mod tests;
