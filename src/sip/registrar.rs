//! Location service rules (RFC 3261 section 10.3): what one REGISTER does to the bindings
//! of an address-of-record (an extension such as `101`, or a PBX trunk id).
//!
//! Pure: [`apply_register`] takes the stored bindings, the request and `now`, and returns
//! what to write (`upsert`, `remove`) and what to answer (`current`, or an error that maps
//! to a status). The caller authenticates first (`digest`, `lockout`), checks that the
//! authenticated user may register this AOR, writes the outcome in one transaction and
//! answers. [`register_request`] turns an rsip REGISTER into a [`RegisterRequest`].
//!
//! A Contact stands for the bindings with the same `+sip.instance` (RFC 5627 section 3.2:
//! the same device, even from a new NAT port or after a reboot with a new Call-ID) and for
//! those with an equivalent URI (RFC 3261 section 19.1.4). It refreshes one of them and
//! replaces the others, so an AOR never holds two bindings for one address.

use std::net::SocketAddr;

use rsipstack::sip::headers::untyped::ToTypedHeader as _;
use rsipstack::sip::{Header, HeadersExt as _, Method, Request, Transport, Uri};

/// One contact of an address-of-record, as the store keeps it. `(aor, contact)` is its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub aor: String,
    /// The Contact URI as the device sent it (inside `<>`), so the 200 OK echoes it exactly.
    pub contact: String,
    /// UTC milliseconds; the binding is gone from this instant on.
    pub expires_at: i64,
    pub call_id: String,
    pub cseq: u32,
    pub q: Option<f32>,
    /// `+sip.instance` without its quotes, e.g. `<urn:uuid:…>`.
    pub instance: Option<String>,
    pub user_agent: Option<String>,
    /// Source `ip:port` the REGISTER came from (where to send requests behind NAT).
    pub received: String,
    pub transport: String,
    /// The REGISTER's Path (RFC 3327), its values top first, joined by `, `: requests to
    /// the device carry it as their Route.
    pub path: Option<String>,
}

impl Binding {
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at > now_ms
    }

    /// Seconds left, rounded up, for the `expires` parameter of the 200 OK.
    pub fn expires_in_secs(&self, now_ms: i64) -> u32 {
        let ms = self.expires_at.saturating_sub(now_ms).max(0);
        u32::try_from(ms.saturating_add(999) / 1000).unwrap_or(u32::MAX)
    }

    /// One Contact value of the 200 OK (RFC 3261 section 10.3 step 8).
    pub fn contact_value(&self, now_ms: i64) -> String {
        let mut value = format!(
            "<{}>;expires={}",
            self.contact,
            self.expires_in_secs(now_ms)
        );
        if let Some(q) = self.q {
            value.push_str(&format!(";q={q}"));
        }
        if let Some(instance) = &self.instance {
            value.push_str(&format!(";+sip.instance=\"{instance}\""));
        }
        value
    }
}

/// One Contact of a REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactEntry {
    pub uri: String,
    pub expires: Option<u32>,
    pub instance: Option<String>,
    pub q: Option<f32>,
}

/// A REGISTER as the location service sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    pub aor: String,
    pub contacts: Vec<ContactEntry>,
    /// `Contact: *`.
    pub star: bool,
    pub expires_header: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: Option<String>,
    pub received: String,
    pub transport: String,
    /// The Path headers' values, top first, joined by `, `.
    pub path: Option<String>,
}

/// Expiry limits, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Shorter requests get 423 (Min-Expires).
    pub min_expires: u32,
    /// Longer requests are shortened to this.
    pub max_expires: u32,
    /// When neither the Contact nor an Expires header says.
    pub default_expires: u32,
    pub max_bindings_per_aor: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 10,
        }
    }
}

/// Why a REGISTER is refused; [`RegisterError::status_code`] gives the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the requested registration interval is shorter than {min_expires} seconds")]
    IntervalTooBrief { min_expires: u32 },
    #[error("Contact: * must be the only Contact of the request")]
    StarWithOtherContacts,
    #[error("Contact: * needs Expires: 0")]
    StarNeedsExpiresZero,
    #[error(
        "REGISTER out of order: CSeq {cseq} is not higher than {stored}, already seen with \
         this Call-ID"
    )]
    OutOfOrder { cseq: u32, stored: u32 },
    #[error("{aor} has reached the limit of {max} registered devices")]
    TooManyBindings { aor: String, max: usize },
    #[error("the request is a {0}, not a REGISTER")]
    NotRegister(String),
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {header} header is malformed: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
}

impl RegisterError {
    /// The SIP status to answer with.
    ///
    /// - 423 with `Min-Expires` (RFC 3261 section 10.3 step 7).
    /// - 400 for `*` misuse (step 6) and malformed headers.
    /// - 500 for out of order: step 7 says the update "MUST be aborted and the request
    ///   fails", and a failing update is answered 500 a few lines earlier in the same step.
    ///   Clients retry with a new CSeq.
    /// - 403 for too many bindings: a standing policy limit, not a passing condition, so
    ///   "do not repeat" (section 21.4.4) is the honest answer. 503 (what Kamailio's
    ///   `max_contacts` sends) tells clients to fail over to another server or retry later,
    ///   which cannot help.
    /// - 500 for a non-REGISTER: the caller routed it here by mistake.
    pub fn status_code(&self) -> u16 {
        match self {
            RegisterError::IntervalTooBrief { .. } => 423,
            RegisterError::StarWithOtherContacts
            | RegisterError::StarNeedsExpiresZero
            | RegisterError::MissingHeader(_)
            | RegisterError::BadHeader { .. } => 400,
            RegisterError::OutOfOrder { .. } | RegisterError::NotRegister(_) => 500,
            RegisterError::TooManyBindings { .. } => 403,
        }
    }

    /// The reason phrase; it names the header for a 400.
    pub fn reason_phrase(&self) -> String {
        match self {
            RegisterError::IntervalTooBrief { .. } => "Interval Too Brief".to_owned(),
            RegisterError::StarWithOtherContacts | RegisterError::StarNeedsExpiresZero => {
                "Bad Contact Header".to_owned()
            }
            RegisterError::OutOfOrder { .. } => "Out Of Order REGISTER".to_owned(),
            RegisterError::TooManyBindings { .. } => "Too Many Registered Devices".to_owned(),
            RegisterError::NotRegister(_) => "Server Internal Error".to_owned(),
            RegisterError::MissingHeader(header) => format!("Missing {header} Header"),
            RegisterError::BadHeader { header, .. } => format!("Bad {header} Header"),
        }
    }

    /// The value of the `Min-Expires` header a 423 must carry.
    pub fn min_expires(&self) -> Option<u32> {
        match self {
            RegisterError::IntervalTooBrief { min_expires } => Some(*min_expires),
            _ => None,
        }
    }
}

/// What a REGISTER changes. `upsert` and `remove` are disjoint; write both in one
/// transaction (RFC 3261 section 10.3 step 7: all or nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterOutcome {
    /// New or refreshed bindings, to write over any stored binding of the same contact.
    pub upsert: Vec<Binding>,
    /// Contacts of this AOR to delete: unregistered, replaced, or expired already.
    pub remove: Vec<String>,
    /// Every live binding of the AOR after the request: the 200 OK's Contact list.
    pub current: Vec<Binding>,
}

/// RFC 3261 section 10.3 steps 6 and 7. `existing` may hold other AORs' and expired
/// bindings; they are ignored (expired ones of this AOR are put in `remove`).
///
/// - `Contact: *` with `Expires: 0` removes all bindings; `*` with anything else is 400.
/// - A contact's interval is its `expires` parameter, else the Expires header, else
///   `default_expires`; 0 removes the binding; under `min_expires` is 423; over
///   `max_expires` is shortened.
/// - A refresh keeps the binding and moves its expiry; a binding with the request's
///   Call-ID is only changed by a higher CSeq (else the request fails, 500).
/// - Several devices per AOR, up to `max_bindings_per_aor`.
pub fn apply_register(
    existing: &[Binding],
    req: &RegisterRequest,
    now_ms: i64,
    policy: &Policy,
) -> Result<RegisterOutcome, RegisterError> {
    let of_aor = existing.iter().filter(|b| b.aor == req.aor);
    let (live, expired): (Vec<&Binding>, Vec<&Binding>) = of_aor.partition(|b| b.is_live(now_ms));

    if req.star {
        // Step 6.
        if !req.contacts.is_empty() {
            return Err(RegisterError::StarWithOtherContacts);
        }
        if req.expires_header != Some(0) {
            return Err(RegisterError::StarNeedsExpiresZero);
        }
        for binding in &live {
            check_order(binding, req)?;
        }
        return Ok(RegisterOutcome {
            upsert: Vec::new(),
            remove: live
                .iter()
                .chain(&expired)
                .map(|b| b.contact.clone())
                .collect(),
            current: Vec::new(),
        });
    }

    // More contacts than could possibly fit is refused before any matching work (which is
    // quadratic in the number of contacts).
    if req.contacts.len() > live.len() + policy.max_bindings_per_aor {
        return Err(RegisterError::TooManyBindings {
            aor: req.aor.clone(),
            max: policy.max_bindings_per_aor,
        });
    }

    // Step 7, all contacts first: the request succeeds or changes nothing.
    let mut working: Vec<Binding> = live.iter().map(|&b| b.clone()).collect();
    // Indices in `working` written by this request (a contact listed twice: last wins).
    let mut touched: Vec<bool> = vec![false; working.len()];
    for entry in &req.contacts {
        let requested = entry
            .expires
            .or(req.expires_header)
            .unwrap_or(policy.default_expires);
        // "If and only if the requested expiration interval is greater than zero AND
        // smaller than one hour AND less than a registrar-configured minimum".
        if requested > 0 && requested < 3600 && requested < policy.min_expires {
            return Err(RegisterError::IntervalTooBrief {
                min_expires: policy.min_expires,
            });
        }
        let granted = requested.min(policy.max_expires);
        // Every binding this contact stands for: the same device or the same address.
        let matches: Vec<usize> = (0..working.len())
            .filter(|&i| {
                same_instance(&working[i], entry) || same_uri(&working[i].contact, &entry.uri)
            })
            .collect();
        for &i in &matches {
            if !touched[i] {
                check_order(&working[i], req)?;
            }
        }
        // The one to refresh: the same device first, else the same address.
        let keep = if granted == 0 {
            None
        } else {
            matches
                .iter()
                .copied()
                .find(|&i| same_instance(&working[i], entry))
                .or_else(|| matches.first().copied())
        };
        for &i in matches.iter().rev() {
            if Some(i) != keep {
                working.remove(i);
                touched.remove(i);
            }
        }
        let keep = keep.map(|k| k - matches.iter().filter(|&&i| i < k).count());
        if granted == 0 {
            continue;
        }
        let fresh = Binding {
            aor: req.aor.clone(),
            contact: entry.uri.clone(),
            expires_at: expiry(now_ms, granted),
            call_id: req.call_id.clone(),
            cseq: req.cseq,
            q: entry.q,
            instance: entry.instance.clone(),
            user_agent: req.user_agent.clone(),
            received: req.received.clone(),
            transport: req.transport.clone(),
            path: req.path.clone(),
        };
        match keep {
            Some(i) => {
                // A refresh without +sip.instance keeps the instance learnt before.
                let instance = fresh
                    .instance
                    .clone()
                    .or_else(|| working[i].instance.take());
                working[i] = Binding { instance, ..fresh };
                touched[i] = true;
            }
            None => {
                working.push(fresh);
                touched.push(true);
            }
        }
    }
    // Refreshes and removals stay possible even when a lowered limit is already exceeded.
    if working.len() > policy.max_bindings_per_aor && working.len() > live.len() {
        return Err(RegisterError::TooManyBindings {
            aor: req.aor.clone(),
            max: policy.max_bindings_per_aor,
        });
    }

    let remove = live
        .iter()
        .chain(&expired)
        .filter(|old| !working.iter().any(|b| b.contact == old.contact))
        .map(|old| old.contact.clone())
        .collect();
    let upsert = working
        .iter()
        .zip(&touched)
        .filter(|(_, touched)| **touched)
        .map(|(b, _)| b.clone())
        .collect();
    Ok(RegisterOutcome {
        upsert,
        remove,
        current: working,
    })
}

fn expiry(now_ms: i64, secs: u32) -> i64 {
    now_ms.saturating_add(i64::from(secs) * 1000)
}

/// Step 7: same Call-ID needs a higher CSeq; another Call-ID may always update.
fn check_order(binding: &Binding, req: &RegisterRequest) -> Result<(), RegisterError> {
    if binding.call_id == req.call_id && req.cseq <= binding.cseq {
        return Err(RegisterError::OutOfOrder {
            cseq: req.cseq,
            stored: binding.cseq,
        });
    }
    Ok(())
}

fn same_instance(binding: &Binding, entry: &ContactEntry) -> bool {
    matches!((&binding.instance, &entry.instance), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

/// URI equivalence, RFC 3261 section 19.1.4, as far as contacts need it: scheme and host
/// case-insensitive, user and password case-sensitive, ports equal (absent differs from
/// 5060), `transport`/`user`/`ttl`/`method`/`maddr` equal when either has them, other
/// parameters equal when both have them, headers ignored. Unparseable URIs are equal only
/// byte for byte.
pub(crate) fn same_uri(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Ok(a), Ok(b)) = (Uri::try_from(a), Uri::try_from(b)) else {
        return false;
    };
    let scheme = |u: &Uri| {
        u.scheme
            .as_ref()
            .map(|s| s.to_string().to_ascii_lowercase())
    };
    if scheme(&a) != scheme(&b)
        || a.auth != b.auth
        || !a
            .host_with_port
            .host
            .to_string()
            .eq_ignore_ascii_case(&b.host_with_port.host.to_string())
        || a.host_with_port.port != b.host_with_port.port
    {
        return false;
    }
    let (pa, pb) = (uri_params(&a), uri_params(&b));
    const MUST_MATCH: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];
    let lookup =
        |ps: &[(String, String)], n: &str| ps.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    for name in MUST_MATCH {
        if lookup(&pa, name) != lookup(&pb, name) {
            return false;
        }
    }
    pa.iter()
        .all(|(name, value)| lookup(&pb, name).is_none_or(|other| other == *value))
}

/// (name, value) of a URI's parameters, both lower-cased.
fn uri_params(uri: &Uri) -> Vec<(String, String)> {
    uri.params
        .iter()
        .map(|p| {
            let text = p.to_string();
            let text = text.trim_start_matches(';');
            let (name, value) = text.split_once('=').unwrap_or((text, ""));
            (name.to_ascii_lowercase(), value.to_ascii_lowercase())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// From an rsip REGISTER
// ---------------------------------------------------------------------------------------

/// Reads what the location service needs from a REGISTER: AOR (the user part of To),
/// Contacts (with `expires`, `q`, `+sip.instance`; `*`), Expires, Call-ID, CSeq and
/// User-Agent. Errors name the header.
///
/// Contacts are split and read here rather than through rsip's typed `Contact`, which
/// re-prints the URI (it drops `transport=udp`): the binding must keep the URI as sent.
/// Each URI is still checked with rsip's URI parser.
pub fn register_request(
    request: &Request,
    source: SocketAddr,
    transport: Transport,
) -> Result<RegisterRequest, RegisterError> {
    if request.method != Method::Register {
        return Err(RegisterError::NotRegister(request.method.to_string()));
    }
    let bad = |header: &'static str, reason: String| RegisterError::BadHeader { header, reason };

    let to = request
        .to_header()
        .map_err(|_| RegisterError::MissingHeader("To"))?
        .typed()
        .map_err(|e| bad("To", e.to_string()))?;
    let aor = to
        .uri
        .user()
        .filter(|user| !user.is_empty())
        .ok_or_else(|| {
            bad(
                "To",
                "the address-of-record has no user part (an extension or trunk id)".into(),
            )
        })?
        .to_owned();

    let call_id = request
        .call_id_header()
        .map_err(|_| RegisterError::MissingHeader("Call-ID"))?
        .value()
        .trim()
        .to_owned();
    if call_id.is_empty() {
        return Err(bad("Call-ID", "it is empty".into()));
    }

    let cseq = request
        .cseq_header()
        .map_err(|_| RegisterError::MissingHeader("CSeq"))?
        .typed()
        .map_err(|e| bad("CSeq", e.to_string()))?;
    if cseq.method != Method::Register {
        return Err(bad(
            "CSeq",
            format!("its method is {}, not REGISTER", cseq.method),
        ));
    }

    let mut expires_header = None;
    let mut user_agent = None;
    let mut contacts = Vec::new();
    let mut star = false;
    let mut path = Vec::new();
    for header in request.headers.iter() {
        match header {
            Header::Expires(value) if expires_header.is_none() => {
                expires_header = Some(delta_seconds(value.value()).ok_or_else(|| {
                    bad(
                        "Expires",
                        format!("'{}' is not a number of seconds", value.value().trim()),
                    )
                })?);
            }
            Header::UserAgent(value) if user_agent.is_none() => {
                user_agent = Some(value.value().trim().to_owned());
            }
            Header::Path(value) => {
                let value = value.value().trim();
                if !value.is_empty() {
                    path.push(value.to_owned());
                }
            }
            Header::Contact(value) => {
                for item in split_outside_quotes_and_brackets(value.value(), b',') {
                    let item = item.trim();
                    if item == "*" {
                        star = true;
                    } else if !item.is_empty() {
                        contacts
                            .push(contact_entry(item).map_err(|reason| bad("Contact", reason))?);
                    }
                }
            }
            _ => {}
        }
    }

    Ok(RegisterRequest {
        aor,
        contacts,
        star,
        expires_header,
        call_id,
        cseq: cseq.seq,
        user_agent,
        received: source.to_string(),
        transport: transport.to_string(),
        path: (!path.is_empty()).then(|| path.join(", ")),
    })
}

/// delta-seconds; larger than 2^32-1 means 2^32-1 (RFC 3261 section 20.19 and 10.2.1.1).
pub(crate) fn delta_seconds(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u32::MAX))
}

/// One Contact value: `name-addr *(;param)` or `addr-spec *(;param)` (RFC 3261 section
/// 20.10: without `<>`, every `;` parameter belongs to the header, not the URI).
pub(crate) fn contact_entry(item: &str) -> Result<ContactEntry, String> {
    let (uri, params) = match find_outside_quotes(item, b'<') {
        Some(open) => {
            let close = item[open..]
                .find('>')
                .map(|i| open + i)
                .ok_or_else(|| format!("'{item}' has no closing '>'"))?;
            (&item[open + 1..close], &item[close + 1..])
        }
        None => match item.find(';') {
            Some(semi) => (&item[..semi], &item[semi..]),
            None => (item, ""),
        },
    };
    let uri = uri.trim();
    Uri::try_from(uri).map_err(|e| format!("'{uri}' is not a URI: {e}"))?;
    let mut entry = ContactEntry {
        uri: uri.to_owned(),
        expires: None,
        instance: None,
        q: None,
    };
    for param in split_outside_quotes_and_brackets(params, b';') {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
            None => (param, None),
        };
        if name.eq_ignore_ascii_case("expires") {
            let value = value.unwrap_or_default();
            entry.expires = Some(
                delta_seconds(&value)
                    .ok_or_else(|| format!("expires={value} is not a number of seconds"))?,
            );
        } else if name.eq_ignore_ascii_case("q") {
            let value = value.unwrap_or_default();
            let q: f32 = value
                .parse()
                .ok()
                .filter(|q: &f32| (0.0..=1.0).contains(q))
                .ok_or_else(|| format!("q={value} is not between 0 and 1"))?;
            entry.q = Some(q);
        } else if name.eq_ignore_ascii_case("+sip.instance") {
            entry.instance = value.filter(|v| !v.is_empty());
        }
    }
    Ok(entry)
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

fn find_outside_quotes(text: &str, wanted: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            _ if b == wanted && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits at `sep` where it is neither inside a quoted string nor inside `<>`.
pub(crate) fn split_outside_quotes_and_brackets(text: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut escaped, mut in_brackets) = (false, false, false);
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_brackets = true,
            b'>' if !in_quotes => in_brackets = false,
            _ if b == sep && !in_quotes && !in_brackets => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;

    fn contact(uri: &str, expires: Option<u32>) -> ContactEntry {
        ContactEntry {
            uri: uri.to_owned(),
            expires,
            instance: None,
            q: None,
        }
    }

    fn request(contacts: Vec<ContactEntry>) -> RegisterRequest {
        RegisterRequest {
            aor: "101".into(),
            contacts,
            star: false,
            expires_header: None,
            call_id: "call-1".into(),
            cseq: 1,
            user_agent: Some("phone".into()),
            received: "192.0.2.1:5060".into(),
            transport: "UDP".into(),
            path: None,
        }
    }

    fn register(
        existing: &[Binding],
        req: &RegisterRequest,
        now: i64,
    ) -> Result<RegisterOutcome, RegisterError> {
        apply_register(existing, req, now, &Policy::default())
    }

    /// What the store does with an outcome.
    fn store_apply(store: &mut Vec<Binding>, outcome: &RegisterOutcome) {
        store.retain(|b| !outcome.remove.contains(&b.contact));
        for new in &outcome.upsert {
            store.retain(|b| !(b.aor == new.aor && b.contact == new.contact));
            store.push(new.clone());
        }
    }

    #[test]
    fn register_new_contact_creates_binding_with_default_expiry() {
        let out = register(
            &[],
            &request(vec![contact("sip:101@192.0.2.1:5060", None)]),
            NOW,
        )
        .expect("ok");
        assert_eq!(out.upsert.len(), 1);
        assert!(out.remove.is_empty());
        let b = &out.current[0];
        assert_eq!(b.expires_at, NOW + 3_600_000);
        assert_eq!(
            b.contact_value(NOW),
            "<sip:101@192.0.2.1:5060>;expires=3600"
        );
        assert_eq!(
            (b.received.as_str(), b.transport.as_str()),
            ("192.0.2.1:5060", "UDP")
        );
    }

    #[test]
    fn register_contact_expires_param_wins_over_expires_header() {
        let mut req = request(vec![
            contact("sip:101@192.0.2.1", Some(120)),
            contact("sip:101@192.0.2.2", None),
        ]);
        req.expires_header = Some(300);
        let out = register(&[], &req, NOW).expect("ok");
        assert_eq!(out.current[0].expires_in_secs(NOW), 120);
        assert_eq!(out.current[1].expires_in_secs(NOW), 300);
    }

    #[test]
    fn register_interval_too_brief_is_423() {
        let err = register(
            &[],
            &request(vec![contact("sip:101@192.0.2.1", Some(59))]),
            NOW,
        )
        .expect_err("too brief");
        assert_eq!(err, RegisterError::IntervalTooBrief { min_expires: 60 });
        assert_eq!(err.status_code(), 423);
        assert_eq!(err.min_expires(), Some(60));
        assert!(
            register(
                &[],
                &request(vec![contact("sip:101@192.0.2.1", Some(60))]),
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn register_interval_too_long_is_shortened_to_max() {
        let out =
            register(&[], &request(vec![contact("sip:101@h", Some(86_400))]), NOW).expect("ok");
        assert_eq!(out.current[0].expires_in_secs(NOW), 3600);
    }

    #[test]
    fn register_refresh_moves_expiry() {
        let first = register(
            &[],
            &request(vec![contact("sip:101@192.0.2.1", Some(600))]),
            NOW,
        )
        .expect("ok");
        let mut refresh = request(vec![contact("sip:101@192.0.2.1", Some(600))]);
        refresh.cseq = 2;
        let later = NOW + 300_000;
        let out = register(&first.current, &refresh, later).expect("ok");
        assert_eq!(out.current.len(), 1, "still one binding");
        assert_eq!(out.upsert.len(), 1);
        assert!(out.remove.is_empty());
        assert_eq!(out.current[0].expires_at, later + 600_000);
        assert_eq!(out.current[0].cseq, 2);
    }

    #[test]
    fn register_refresh_matches_equivalent_uri() {
        // RFC 3261 19.1.4: host case-insensitive, parameter order irrelevant.
        let first = register(
            &[],
            &request(vec![contact(
                "sip:101@PBX.example;transport=tcp;ob",
                Some(600),
            )]),
            NOW,
        )
        .expect("ok");
        let mut refresh = request(vec![contact(
            "sip:101@pbx.example;ob;transport=TCP",
            Some(600),
        )]);
        refresh.cseq = 2;
        let out = register(&first.current, &refresh, NOW).expect("ok");
        assert_eq!(out.current.len(), 1);
        // The new text replaces the old one in the store.
        assert_eq!(out.remove, ["sip:101@PBX.example;transport=tcp;ob"]);
        assert_eq!(
            out.upsert[0].contact,
            "sip:101@pbx.example;ob;transport=TCP"
        );
        assert!(
            !same_uri("sip:101@h", "sip:101@h:5060"),
            "absent port differs"
        );
        assert!(!same_uri("sip:101@h", "sip:101@h;transport=tcp"));
        assert!(!same_uri("sip:101@h", "sip:102@h"));
        assert!(
            !same_uri("sip:Alice@h", "sip:alice@h"),
            "user is case-sensitive"
        );
    }

    #[test]
    fn register_expires_zero_removes_one_binding() {
        let setup = register(
            &[],
            &request(vec![contact("sip:101@a", None), contact("sip:101@b", None)]),
            NOW,
        )
        .expect("ok");
        let mut req = request(vec![contact("sip:101@a", Some(0))]);
        req.cseq = 2;
        let out = register(&setup.current, &req, NOW + 1).expect("ok");
        assert_eq!(out.remove, ["sip:101@a"]);
        assert!(out.upsert.is_empty());
        assert_eq!(out.current.len(), 1);
        assert_eq!(out.current[0].contact, "sip:101@b");
    }

    #[test]
    fn register_expires_header_zero_removes_listed_contacts() {
        let setup = register(&[], &request(vec![contact("sip:101@a", None)]), NOW).expect("ok");
        let mut req = request(vec![contact("sip:101@a", None)]);
        req.expires_header = Some(0);
        req.call_id = "other".into();
        let out = register(&setup.current, &req, NOW).expect("ok");
        assert_eq!(out.remove, ["sip:101@a"]);
        assert!(out.current.is_empty());
    }

    #[test]
    fn register_star_removes_all_bindings() {
        let setup = register(
            &[],
            &request(vec![contact("sip:101@a", None), contact("sip:101@b", None)]),
            NOW,
        )
        .expect("ok");
        let mut req = request(vec![]);
        req.star = true;
        req.expires_header = Some(0);
        req.cseq = 2;
        let out = register(&setup.current, &req, NOW).expect("ok");
        assert_eq!(out.remove, ["sip:101@a", "sip:101@b"]);
        assert!(out.current.is_empty() && out.upsert.is_empty());
    }

    #[test]
    fn register_star_without_expires_zero_is_400() {
        let mut req = request(vec![]);
        req.star = true;
        for expires in [None, Some(60)] {
            req.expires_header = expires;
            let err = register(&[], &req, NOW).expect_err("400");
            assert_eq!(err, RegisterError::StarNeedsExpiresZero);
            assert_eq!(err.status_code(), 400);
        }
    }

    #[test]
    fn register_star_with_other_contacts_is_400() {
        let mut req = request(vec![contact("sip:101@a", None)]);
        req.star = true;
        req.expires_header = Some(0);
        let err = register(&[], &req, NOW).expect_err("400");
        assert_eq!(err, RegisterError::StarWithOtherContacts);
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn register_star_out_of_order_is_refused() {
        let setup = register(&[], &request(vec![contact("sip:101@a", None)]), NOW).expect("ok");
        let mut req = request(vec![]);
        req.star = true;
        req.expires_header = Some(0);
        // Same Call-ID, same CSeq 1: a delayed duplicate must not unregister.
        assert!(matches!(
            register(&setup.current, &req, NOW),
            Err(RegisterError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn register_same_call_id_lower_cseq_is_out_of_order_500() {
        let mut first = request(vec![contact("sip:101@a", None)]);
        first.cseq = 5;
        let setup = register(&[], &first, NOW).expect("ok");
        for cseq in [4, 5] {
            let mut late = request(vec![contact("sip:101@a", Some(0))]);
            late.cseq = cseq;
            let err = register(&setup.current, &late, NOW).expect_err("out of order");
            assert_eq!(err, RegisterError::OutOfOrder { cseq, stored: 5 });
            assert_eq!(err.status_code(), 500);
        }
    }

    #[test]
    fn register_other_call_id_updates_regardless_of_cseq() {
        let mut first = request(vec![contact("sip:101@a", None)]);
        first.cseq = 50;
        let setup = register(&[], &first, NOW).expect("ok");
        let mut rebooted = request(vec![contact("sip:101@a", Some(120))]);
        rebooted.call_id = "after-reboot".into();
        rebooted.cseq = 1;
        let out = register(&setup.current, &rebooted, NOW).expect("ok");
        assert_eq!(out.current[0].call_id, "after-reboot");
        assert_eq!(out.current[0].expires_in_secs(NOW), 120);
    }

    #[test]
    fn register_several_devices_per_aor() {
        let desk = register(&[], &request(vec![contact("sip:101@desk", None)]), NOW).expect("ok");
        let mut mobile = request(vec![contact("sip:101@mobile", None)]);
        mobile.call_id = "mobile".into();
        let out = register(&desk.current, &mobile, NOW).expect("ok");
        assert_eq!(out.current.len(), 2);
        assert_eq!(out.upsert.len(), 1, "the desk phone is not rewritten");
    }

    #[test]
    fn register_same_instance_replaces_binding_from_new_address() {
        let mut first = request(vec![ContactEntry {
            instance: Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>".into()),
            ..contact("sip:101@198.51.100.7:40000", None)
        }]);
        first.call_id = "before-nat-rebind".into();
        let setup = register(&[], &first, NOW).expect("ok");
        let mut second = request(vec![ContactEntry {
            instance: Some("<urn:uuid:00000000-0000-1000-8000-aabbccddeeff>".into()),
            ..contact("sip:101@198.51.100.7:40123", None)
        }]);
        second.call_id = "after-nat-rebind".into();
        let out = register(&setup.current, &second, NOW).expect("ok");
        assert_eq!(out.current.len(), 1);
        assert_eq!(out.remove, ["sip:101@198.51.100.7:40000"]);
        assert_eq!(out.upsert[0].contact, "sip:101@198.51.100.7:40123");
    }

    #[test]
    fn register_expired_bindings_are_ignored_and_cleaned_up() {
        let setup = register(&[], &request(vec![contact("sip:101@a", Some(60))]), NOW).expect("ok");
        let after = NOW + 60_000;
        // A query (no Contact) after expiry shows nothing and drops the dead binding.
        let out = register(&setup.current, &request(vec![]), after).expect("ok");
        assert!(out.current.is_empty());
        assert_eq!(out.remove, ["sip:101@a"]);
        // Same Call-ID and CSeq against an expired binding is not out of order: it is gone.
        let out = register(
            &setup.current,
            &request(vec![contact("sip:101@a", None)]),
            after,
        )
        .expect("ok");
        assert_eq!(out.current.len(), 1);
        assert!(
            out.remove.is_empty(),
            "re-registered, so upserted, not removed"
        );
    }

    #[test]
    fn register_query_without_contact_lists_bindings_unchanged() {
        let setup = register(&[], &request(vec![contact("sip:101@a", None)]), NOW).expect("ok");
        let out = register(&setup.current, &request(vec![]), NOW + 1000).expect("ok");
        assert_eq!(out.current, setup.current);
        assert!(out.upsert.is_empty() && out.remove.is_empty());
    }

    #[test]
    fn register_other_aors_are_untouched() {
        let other = Binding {
            aor: "102".into(),
            ..register(&[], &request(vec![contact("sip:102@x", None)]), NOW)
                .expect("ok")
                .current[0]
                .clone()
        };
        let out = register(
            std::slice::from_ref(&other),
            &request(vec![contact("sip:101@a", None)]),
            NOW,
        )
        .expect("ok");
        assert_eq!(out.current.len(), 1);
        assert!(out.remove.is_empty());
    }

    #[test]
    fn register_too_many_bindings_is_403() {
        let policy = Policy {
            max_bindings_per_aor: 2,
            ..Policy::default()
        };
        let two = apply_register(
            &[],
            &request(vec![contact("sip:101@a", None), contact("sip:101@b", None)]),
            NOW,
            &policy,
        )
        .expect("ok");
        let mut third = request(vec![contact("sip:101@c", None)]);
        third.call_id = "c".into();
        let err = apply_register(&two.current, &third, NOW, &policy).expect_err("limit");
        assert_eq!(
            err,
            RegisterError::TooManyBindings {
                aor: "101".into(),
                max: 2
            }
        );
        assert_eq!(err.status_code(), 403);
        // Replacing one device by another in one request stays possible.
        third.contacts.insert(0, contact("sip:101@a", Some(0)));
        third.call_id = "call-1".into();
        third.cseq = 2;
        let out = apply_register(&two.current, &third, NOW, &policy).expect("ok");
        assert_eq!(out.current.len(), 2);
        // A lowered limit does not stop a refresh.
        let one = Policy {
            max_bindings_per_aor: 1,
            ..Policy::default()
        };
        let mut refresh = request(vec![contact("sip:101@a", None)]);
        refresh.cseq = 3;
        assert!(apply_register(&two.current, &refresh, NOW, &one).is_ok());
    }

    #[test]
    fn register_with_more_contacts_than_could_fit_is_403_before_any_work() {
        let contacts = (0..5000)
            .map(|i| contact(&format!("sip:101@192.0.2.1:{i}"), None))
            .collect();
        assert!(matches!(
            register(&[], &request(contacts), NOW),
            Err(RegisterError::TooManyBindings { max: 10, .. })
        ));
    }

    #[test]
    fn register_error_is_all_or_nothing() {
        // The second contact is too brief: the first must not be registered either.
        let err = register(
            &[],
            &request(vec![
                contact("sip:101@a", None),
                contact("sip:101@b", Some(10)),
            ]),
            NOW,
        );
        assert!(matches!(err, Err(RegisterError::IntervalTooBrief { .. })));
    }

    fn sip_request(text: &str) -> Request {
        Request::try_from(text.replace('\n', "\r\n").as_str()).expect("parses")
    }

    fn source() -> SocketAddr {
        "203.0.113.5:40000".parse().expect("addr")
    }

    #[test]
    fn register_request_reads_real_xlite_register() {
        let text = std::fs::read_to_string(format!(
            "{}/tests/data/sip-traces/digest/wireshark-samples/Asterisk_ZFONE_XLITE/Asterisk_ZFONE_XLITE-003.sip",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("corpus file");
        let req = Request::try_from(text.as_str()).expect("parses");
        let r = register_request(&req, source(), Transport::Udp).expect("reads");
        assert_eq!(r.aor, "10009");
        assert_eq!(
            r.contacts,
            [contact(
                "sip:10009@192.168.10.41:13434;rinstance=309c3e58798d5f69",
                None
            )]
        );
        assert_eq!(r.expires_header, Some(3600));
        assert_eq!(r.cseq, 2);
        assert_eq!(r.call_id, "M2NhZDAwZmYwZGNkYmZjYzQzYmY1MTMxMDQ2MzkzMTk.");
        assert_eq!(
            r.user_agent.as_deref(),
            Some("X-Lite 4 release 4.0 stamp 58832")
        );
        assert_eq!(
            (r.received.as_str(), r.transport.as_str()),
            ("203.0.113.5:40000", "UDP")
        );
    }

    #[test]
    fn register_request_reads_real_nero_register_with_q() {
        let text = std::fs::read_to_string(format!(
            "{}/tests/data/sip-traces/digest/wireshark-samples/aaa/aaa-003.sip",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("corpus file");
        let req = Request::try_from(text.as_str()).expect("parses");
        let r = register_request(&req, source(), Transport::Udp).expect("reads");
        assert_eq!(r.aor, "voi18063");
        assert_eq!(
            r.contacts,
            [ContactEntry {
                q: Some(0.5),
                ..contact(
                    "sip:voi18063@192.168.1.2:5060;line=9c7d2dbd8822013c",
                    Some(1200)
                )
            }]
        );
    }

    /// A REGISTER relayed by the proxy in front of several nodes carries the proxy's Path
    /// (RFC 3327): kept in order, top first, and handed to the binding so calls to the
    /// phone go back through the proxy.
    #[test]
    fn register_request_keeps_the_path_for_the_binding() {
        let req = sip_request(
            "REGISTER sip:leadline SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK2
Via: SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK1;rport=40000
To: <sip:101@leadline>
From: <sip:101@leadline>;tag=1
Call-ID: path-1
CSeq: 1 REGISTER
Path: <sip:10.0.0.5:5060;lr;received=sip:203.0.113.5:40000>
Path: <sip:edge.example;lr>
Contact: <sip:101@192.168.1.20:5060>
Content-Length: 0

",
        );
        let r = register_request(&req, source(), Transport::Udp).expect("reads");
        let path = "<sip:10.0.0.5:5060;lr;received=sip:203.0.113.5:40000>, <sip:edge.example;lr>";
        assert_eq!(r.path.as_deref(), Some(path));
        let out = register(&[], &r, NOW).expect("ok");
        assert_eq!(out.upsert[0].path.as_deref(), Some(path));

        let plain = register(&[], &request(vec![contact("sip:101@a", None)]), NOW).expect("ok");
        assert_eq!(plain.upsert[0].path, None);
    }

    #[test]
    fn register_request_reads_several_contacts_instance_and_star() {
        let req = sip_request(
            "REGISTER sip:pbx.example SIP/2.0
Via: SIP/2.0/TCP 203.0.113.5:40000;branch=z9hG4bK1
To: <sip:101@pbx.example>
From: <sip:101@pbx.example>;tag=1
Call-ID: abc
CSeq: 7 REGISTER
Contact: \"Desk, left\" <sip:101@203.0.113.5:40000;transport=udp;ob>;expires=600;+sip.instance=\"<urn:uuid:0000-1>\", <sip:101@[2001:db8::1]:5060>
m: sip:101@203.0.113.6;expires=4294967296
Expires: 300
Content-Length: 0

",
        );
        let r = register_request(&req, source(), Transport::Tcp).expect("reads");
        assert_eq!(r.transport, "TCP");
        assert_eq!(
            r.contacts,
            [
                ContactEntry {
                    instance: Some("<urn:uuid:0000-1>".into()),
                    ..contact("sip:101@203.0.113.5:40000;transport=udp;ob", Some(600))
                },
                contact("sip:101@[2001:db8::1]:5060", None),
                contact("sip:101@203.0.113.6", Some(u32::MAX)),
            ]
        );
        assert!(!r.star);

        let star = sip_request(
            "REGISTER sip:pbx.example SIP/2.0
Via: SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK1
To: <sip:101@pbx.example>
From: <sip:101@pbx.example>;tag=1
Call-ID: abc
CSeq: 8 REGISTER
Contact: *
Expires: 0
Content-Length: 0

",
        );
        let r = register_request(&star, source(), Transport::Udp).expect("reads");
        assert!(r.star && r.contacts.is_empty());
        assert_eq!(r.expires_header, Some(0));
    }

    #[test]
    fn register_request_errors_name_the_header() {
        let base = "REGISTER sip:pbx.example SIP/2.0
Via: SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK1
To: <sip:101@pbx.example>
From: <sip:101@pbx.example>;tag=1
Call-ID: abc
CSeq: 8 REGISTER
Contact: <sip:101@203.0.113.5>
Content-Length: 0

";
        assert!(register_request(&sip_request(base), source(), Transport::Udp).is_ok());
        let cases = [
            (
                "Contact: <sip:101@203.0.113.5>",
                "Contact: <sip:101@203.0.113.5>;expires=soon",
                "Contact",
            ),
            (
                "Contact: <sip:101@203.0.113.5>",
                "Contact: <sip:101@203.0.113.5>;q=2",
                "Contact",
            ),
            (
                "Contact: <sip:101@203.0.113.5>",
                "Contact: <sip:101@203.0.113.5",
                "Contact",
            ),
            (
                "Contact: <sip:101@203.0.113.5>",
                "Contact: <sip:101@203.0.113.5>\nExpires: -1",
                "Expires",
            ),
            ("To: <sip:101@pbx.example>", "To: <sip:pbx.example>", "To"),
            ("CSeq: 8 REGISTER", "CSeq: 8 INVITE", "CSeq"),
        ];
        for (from, to, header) in cases {
            let err = register_request(
                &sip_request(&base.replace(from, to)),
                source(),
                Transport::Udp,
            )
            .expect_err(to);
            assert!(
                matches!(&err, RegisterError::BadHeader { header: h, .. } if *h == header),
                "{to}: {err:?}"
            );
            assert_eq!(err.status_code(), 400);
            assert_eq!(err.reason_phrase(), format!("Bad {header} Header"));
        }
    }

    /// One random step: who registers what, and how much time passes first.
    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: i64,
        star: bool,
        contacts: Vec<(usize, Option<u32>, bool)>,
        expires_header: Option<u32>,
        call_id: usize,
        cseq: u32,
    }

    fn step() -> impl Strategy<Value = Step> {
        let expires = prop_oneof![
            Just(None),
            Just(Some(0)),
            Just(Some(30)),
            Just(Some(60)),
            Just(Some(90)),
            Just(Some(7200)),
            Just(Some(u32::MAX)),
        ];
        (
            0i64..200_000,
            proptest::bool::weighted(0.1),
            proptest::collection::vec((0usize..4, expires.clone(), any::<bool>()), 0..4),
            expires,
            0usize..2,
            0u32..6,
        )
            .prop_map(
                |(advance_ms, star, contacts, expires_header, call_id, cseq)| Step {
                    advance_ms,
                    star,
                    contacts,
                    expires_header,
                    call_id,
                    cseq,
                },
            )
    }

    proptest! {
        #[test]
        fn bindings_never_outlive_their_expiry(steps in proptest::collection::vec(step(), 1..40)) {
            let policy = Policy { max_bindings_per_aor: 3, ..Policy::default() };
            let uris = ["sip:101@a", "sip:101@A:5060", "sip:101@b;transport=tcp", "sip:101@c"];
            let mut store: Vec<Binding> = Vec::new();
            let mut now = NOW;
            for s in steps {
                now += s.advance_ms;
                let req = RegisterRequest {
                    star: s.star,
                    contacts: s.contacts.iter().map(|&(u, expires, with_instance)| ContactEntry {
                        instance: with_instance.then(|| format!("<urn:uuid:{u}>")),
                        ..contact(uris[u], expires)
                    }).collect(),
                    expires_header: s.expires_header,
                    call_id: format!("call-{}", s.call_id),
                    cseq: s.cseq,
                    ..request(vec![])
                };
                let before = store.clone();
                match apply_register(&store, &req, now, &policy) {
                    Ok(out) => {
                        for b in &out.current {
                            prop_assert!(b.is_live(now), "{b:?} at {now}");
                            prop_assert!(b.expires_at <= now + i64::from(policy.max_expires) * 1000);
                        }
                        prop_assert!(out.current.len() <= policy.max_bindings_per_aor);
                        for r in &out.remove {
                            prop_assert!(!out.upsert.iter().any(|u| &u.contact == r));
                        }
                        store_apply(&mut store, &out);
                        // The store, minus what has expired, is exactly what the 200 OK lists.
                        let mut live: Vec<_> = store.iter().filter(|b| b.is_live(now)).cloned().collect();
                        let mut current = out.current.clone();
                        live.sort_by(|a, b| a.contact.cmp(&b.contact));
                        current.sort_by(|a, b| a.contact.cmp(&b.contact));
                        prop_assert_eq!(live, current);
                    }
                    Err(_) => prop_assert_eq!(&store, &before),
                }
            }
            // However the sequence ended, a later look shows nothing past its expiry.
            let later = now + i64::from(policy.max_expires) * 1000;
            let out = apply_register(&store, &request(vec![]), later, &policy).expect("a query");
            prop_assert!(out.current.is_empty());
        }
    }
}
