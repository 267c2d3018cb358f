//! The pieces of the RFC 3261 §25 grammar our checks need: character classes, SIP and
//! absolute URIs, name-addr / addr-spec with parameters, and `Via` values.
//!
//! Everything works on bytes of one unfolded header value (or the Request-URI) and answers
//! `Err(why)` with a short phrase for the reason phrase of a 400. Nothing here allocates on
//! the success path beyond the parameter list, and nothing indexes without a bound check:
//! the input is whatever a peer sent.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a value does not follow the grammar, in words for a reason phrase.
pub(super) type Why = String;

// ---------------------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1)
// ---------------------------------------------------------------------------------------

fn is_mark(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || is_mark(b)
}

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")`
pub(super) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// `word` adds `( ) < > : \ " / [ ] ? { }` to the token characters (Call-ID).
fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

pub(super) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

fn is_word(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_word_char(b))
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_header_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// `uric = reserved / unreserved / escaped` (the `%` is checked as an escape separately).
fn is_uric(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
        )
}

/// Every byte is in `class` or starts a `%` HEX HEX escape.
fn escaped_run(s: &[u8], class: fn(u8) -> bool) -> Result<(), Why> {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3).unwrap_or(&[]);
            if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err("'%' not followed by two hex digits".into());
            }
            i += 3;
        } else if class(b) {
            i += 1;
        } else {
            return Err(format!("character {} not allowed", shown(b)));
        }
    }
    Ok(())
}

/// A byte as it should appear in a reason phrase: printable ASCII quoted, else as hex.
pub(super) fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02X}")
    }
}

/// ASCII-only text for a reason phrase (our own grammar only lets ASCII reach it).
pub(super) fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

// ---------------------------------------------------------------------------------------
// Cursor
// ---------------------------------------------------------------------------------------

/// A position in one header value. Every read is bound-checked.
pub(super) struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(s: &'a [u8]) -> Self {
        Self { s, i: 0 }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn bump(&mut self) {
        self.i = (self.i + 1).min(self.s.len());
    }

    pub(super) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips SP/HT (folding is already undone); true if any was skipped.
    pub(super) fn skip_ws(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
        self.i > start
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        self.s.get(start..self.i).unwrap_or(&[])
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), Why> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(match self.peek() {
                Some(found) => format!("expected {what}, found {}", shown(found)),
                None => format!("expected {what}, found the end"),
            })
        }
    }

    /// `quoted-string`, returned with its quotes. Any octet may sit between the quotes;
    /// a backslash quotes the next one (`quoted-pair`).
    fn quoted_string(&mut self) -> Result<&'a [u8], Why> {
        let start = self.i;
        self.expect(b'"', "'\"'")?;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    if self.at_end() {
                        return Err("unterminated quoted string".into());
                    }
                    self.bump();
                }
                Some(_) => self.bump(),
            }
        }
        Ok(self.s.get(start..self.i).unwrap_or(&[]))
    }

    /// `comment` with nesting and quoted-pairs. RFC 2543 allowed one after a Via or
    /// Contact value; RFC 3261 dropped it, old stacks still send it. Nesting is bounded
    /// by the input length, and this is a loop, not recursion.
    fn comment(&mut self) -> Result<(), Why> {
        self.expect(b'(', "'('")?;
        let mut depth = 1usize;
        while depth > 0 {
            match self.peek() {
                None => return Err("unterminated comment".into()),
                Some(b'(') => depth += 1,
                Some(b')') => depth -= 1,
                Some(b'\\') => self.bump(),
                Some(_) => {}
            }
            self.bump();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Hosts and URIs
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Host<'a> {
    Name(&'a [u8]),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// `IPv6reference` without its brackets, through the standard library's parser.
/// RFC 5118 §4.10's three-colon form `2001:db8:::192.0.2.1` is refused here.
fn ipv6(s: &[u8]) -> Result<Ipv6Addr, Why> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("invalid IPv6 address [{}]", text(s)))
}

/// `hostname / IPv4address` (bracketed IPv6 is handled by the caller). We allow `_` in
/// labels, which RFC 3261 does not, because real devices use it; a name made only of
/// digits and dots must be a valid IPv4 address.
fn host_name(s: &[u8]) -> Result<Host<'_>, Why> {
    if s.is_empty() {
        return Err("empty host".into());
    }
    if s.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return std::str::from_utf8(s)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Host::V4)
            .ok_or_else(|| format!("invalid IPv4 address {}", text(s)));
    }
    let labels = s.strip_suffix(b".").unwrap_or(s);
    for label in labels.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(format!("empty label in host {}", text(s)));
        }
        if let Some(&b) = label
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(format!("character {} not allowed in host", shown(b)));
        }
    }
    Ok(Host::Name(s))
}

fn port(digits: &[u8]) -> Result<u16, Why> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("invalid port {}", text(digits)));
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("port {} out of range", text(digits)))
}

/// `host [":" port]` at the cursor; `lws` allows SP/HT around the colon (Via's sent-by).
fn host_port<'a>(c: &mut Cursor<'a>, lws: bool) -> Result<(Host<'a>, &'a [u8], Option<u16>), Why> {
    let start = c.i;
    let host = if c.peek() == Some(b'[') {
        c.bump();
        let inner = c.take_while(|b| b != b']');
        c.expect(b']', "']' after IPv6 address")?;
        Host::V6(ipv6(inner)?)
    } else {
        let name = c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        host_name(name)?
    };
    let host_text = c.s.get(start..c.i).unwrap_or(&[]);
    let save = c.i;
    if lws {
        c.skip_ws();
    }
    if c.eat(b':') {
        if lws {
            c.skip_ws();
        }
        let digits = c.take_while(|b| b.is_ascii_digit());
        return Ok((host, host_text, Some(port(digits)?)));
    }
    c.i = save;
    Ok((host, host_text, None))
}

/// A SIP or SIPS URI, split into its parts (all still escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SipUri<'a> {
    pub secure: bool,
    pub user: Option<&'a [u8]>,
    pub password: Option<&'a [u8]>,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// `uri-parameters` without the leading `;` (empty when there are none).
    pub params: &'a [u8],
    /// `headers` without the leading `?`.
    pub headers: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Uri<'a> {
    Sip(SipUri<'a>),
    /// `absoluteURI`: any other scheme (tel, http, urn, isbn …), checked only for its
    /// characters.
    Other {
        scheme: &'a [u8],
    },
}

impl Uri<'_> {
    pub(super) fn has_headers(&self) -> bool {
        matches!(
            self,
            Uri::Sip(SipUri {
                headers: Some(_),
                ..
            })
        )
    }
}

/// `SIP-URI / SIPS-URI / absoluteURI`.
pub(super) fn uri(s: &[u8]) -> Result<Uri<'_>, Why> {
    let colon = s
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| "no scheme".to_string())?;
    let (scheme, rest) = (
        s.get(..colon).unwrap_or(&[]),
        s.get(colon + 1..).unwrap_or(&[]),
    );
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(format!("invalid scheme {}", text(scheme)));
    }
    if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        return sip_uri(rest, scheme.len() == 4).map(Uri::Sip);
    }
    if rest.is_empty() {
        return Err("empty URI after the scheme".into());
    }
    escaped_run(rest, is_uric)?;
    Ok(Uri::Other { scheme })
}

/// What follows `sip:` / `sips:`.
fn sip_uri(rest: &[u8], secure: bool) -> Result<SipUri<'_>, Why> {
    // No '@' may appear unescaped after the userinfo (host, uri-parameters and headers
    // exclude it), so the first '@' ends the userinfo even when the user part holds
    // ';' or '?' (RFC 4475 §3.1.1.9 "semiuri").
    let (user, password, host_part) = match rest.iter().position(|&b| b == b'@') {
        Some(at) => {
            let userinfo = rest.get(..at).unwrap_or(&[]);
            let (user, password) = match userinfo.iter().position(|&b| b == b':') {
                Some(colon) => (
                    userinfo.get(..colon).unwrap_or(&[]),
                    Some(userinfo.get(colon + 1..).unwrap_or(&[])),
                ),
                None => (userinfo, None),
            };
            escaped_run(user, is_user_char).map_err(|e| format!("user part: {e}"))?;
            if let Some(password) = password {
                escaped_run(password, is_password_char).map_err(|e| format!("password: {e}"))?;
            }
            (Some(user), password, rest.get(at + 1..).unwrap_or(&[]))
        }
        None => (None, None, rest),
    };
    let host_end = host_part
        .iter()
        .position(|&b| b == b';' || b == b'?')
        .unwrap_or(host_part.len());
    let colons = host_part
        .get(..host_end)
        .unwrap_or(&[])
        .iter()
        .filter(|&&b| b == b':');
    if host_part.first() != Some(&b'[') && colons.count() > 1 {
        // RFC 5118 §4.2 "ipv6-bad": rsip reads sip:2001:db8::10 as host 2001:db8: port 10.
        return Err("IPv6 address not enclosed in []".into());
    }
    let mut c = Cursor::new(host_part);
    let (host, _, port) = host_port(&mut c, false)?;
    let params_start = c.i;
    while c.eat(b';') {
        let name = c.take_while(|b| is_param_char(b) || b == b'%');
        if name.is_empty() {
            return Err("empty URI parameter".into());
        }
        escaped_run(name, is_param_char)?;
        if c.eat(b'=') {
            let value = c.take_while(|b| is_param_char(b) || b == b'%');
            if value.is_empty() {
                return Err(format!("URI parameter {} has an empty value", text(name)));
            }
            escaped_run(value, is_param_char)?;
        }
    }
    let params = host_part
        .get(params_start..c.i)
        .map(|p| p.strip_prefix(b";").unwrap_or(p))
        .unwrap_or(&[]);
    let headers = if c.eat(b'?') {
        let start = c.i;
        loop {
            let name = c.take_while(|b| is_header_char(b) || b == b'%');
            if name.is_empty() {
                return Err("empty URI header name".into());
            }
            escaped_run(name, is_header_char)?;
            c.expect(b'=', "'=' in URI header")?;
            let value = c.take_while(|b| is_header_char(b) || b == b'%');
            escaped_run(value, is_header_char)?;
            if !c.eat(b'&') {
                break;
            }
        }
        Some(host_part.get(start..c.i).unwrap_or(&[]))
    } else {
        None
    };
    if let Some(b) = c.peek() {
        return Err(format!("character {} not allowed in URI", shown(b)));
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

/// `generic-param = token [ EQUAL gen-value ]`, `gen-value = token / host / quoted-string`.
/// A value may also be a bare IPv6 address, as RFC 3261's `via-received` allows
/// (RFC 5118 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

fn gen_value<'a>(c: &mut Cursor<'a>) -> Result<&'a [u8], Why> {
    match c.peek() {
        Some(b'"') => c.quoted_string(),
        Some(b'[') => {
            let start = c.i;
            c.bump();
            let inner = c.take_while(|b| b != b']');
            c.expect(b']', "']' after IPv6 address")?;
            ipv6(inner)?;
            Ok(c.s.get(start..c.i).unwrap_or(&[]))
        }
        _ => {
            let v = c.take_while(|b| is_token_char(b) || b == b':');
            if v.is_empty() {
                return Err(match c.peek() {
                    Some(b) => format!("parameter value expected, found {}", shown(b)),
                    None => "parameter value expected, found the end".into(),
                });
            }
            if v.contains(&b':') {
                ipv6(v)?;
            }
            Ok(v)
        }
    }
}

/// `*( SEMI generic-param )` with LWS allowed around `;` and `=`.
fn params<'a>(c: &mut Cursor<'a>) -> Result<Vec<Param<'a>>, Why> {
    let mut out = Vec::new();
    loop {
        let save = c.i;
        c.skip_ws();
        if !c.eat(b';') {
            c.i = save;
            return Ok(out);
        }
        c.skip_ws();
        let name = c.token().ok_or_else(|| "empty parameter".to_string())?;
        let save = c.i;
        c.skip_ws();
        let value = if c.eat(b'=') {
            c.skip_ws();
            Some(gen_value(c)?)
        } else {
            c.i = save;
            None
        };
        out.push(Param { name, value });
    }
}

/// After one list element: optional SP/HT, optionally an RFC 2543 comment, then `,`
/// (another element follows: true) or the end (false).
fn list_separator(c: &mut Cursor<'_>, allow_comment: bool) -> Result<bool, Why> {
    c.skip_ws();
    if allow_comment && c.peek() == Some(b'(') {
        c.comment()?;
        c.skip_ws();
    }
    if c.eat(b',') {
        c.skip_ws();
        if c.at_end() || c.peek() == Some(b',') {
            return Err("empty list element".into());
        }
        return Ok(true);
    }
    match c.peek() {
        None => Ok(false),
        Some(b) => Err(format!("unexpected {}", shown(b))),
    }
}

// ---------------------------------------------------------------------------------------
// name-addr / addr-spec (From, To, Contact)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameAddr<'a> {
    /// The display name as written: a quoted-string with its quotes, or tokens.
    pub display: Option<&'a [u8]>,
    pub uri_text: &'a [u8],
    pub uri: Uri<'a>,
    pub params: Vec<Param<'a>>,
}

impl NameAddr<'_> {
    pub(super) fn param(&self, name: &str) -> Option<Option<&[u8]>> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|p| p.value)
    }

    /// `"display" <uri>;name=value`, the form rsip's typed headers read correctly: no LWS
    /// around `;` and `=` (rsip keeps it in the parameter name, so `tag = x` is no tag).
    pub(super) fn canonical(&self) -> String {
        let mut out = String::new();
        if let Some(d) = self.display {
            out.push_str(&String::from_utf8_lossy(d));
            out.push(' ');
        }
        out.push('<');
        out.push_str(&String::from_utf8_lossy(self.uri_text));
        out.push('>');
        push_params(&mut out, &self.params);
        out
    }
}

pub(super) fn push_params(out: &mut String, params: &[Param<'_>]) {
    for p in params {
        out.push(';');
        out.push_str(&String::from_utf8_lossy(p.name));
        if let Some(v) = p.value {
            out.push('=');
            out.push_str(&String::from_utf8_lossy(v));
        }
    }
}

/// `display-name = *(token LWS) / quoted-string` followed by `<`: consumes it and the `<`
/// and returns the display name, or leaves the cursor where it was.
fn display_name<'a>(c: &mut Cursor<'a>) -> Result<Option<Option<&'a [u8]>>, Why> {
    if c.peek() == Some(b'"') {
        let q = c.quoted_string()?;
        c.skip_ws();
        c.expect(b'<', "'<' after the display name")?;
        return Ok(Some(Some(q)));
    }
    if c.eat(b'<') {
        return Ok(Some(None));
    }
    let save = c.i;
    let start = c.i;
    let mut end = c.i;
    while c.token().is_some() {
        end = c.i;
        c.skip_ws();
    }
    if end > start && c.eat(b'<') {
        return Ok(Some(c.s.get(start..end)));
    }
    c.i = save;
    Ok(None)
}

/// One `(name-addr / addr-spec) *(SEMI param)`.
fn name_addr<'a>(c: &mut Cursor<'a>) -> Result<NameAddr<'a>, Why> {
    c.skip_ws();
    let (display, uri_text) = match display_name(c)? {
        Some(display) => {
            let inner = c.take_while(|b| b != b'>');
            c.expect(b'>', "'>'")?;
            if inner.first().is_some_and(|&b| is_ws(b)) || inner.last().is_some_and(|&b| is_ws(b)) {
                return Err("spaces inside <>".into());
            }
            (display, inner)
        }
        None => {
            // addr-spec without <>: it ends at ';' (header parameters), ',' or LWS.
            let spec = c.take_while(|b| !matches!(b, b';' | b',') && !is_ws(b));
            if spec.contains(&b'?') {
                // RFC 3261 §20.10: a URI with ',', '?' or ';' must be in <> (RFC 4475
                // §3.1.2.13 "regbadct").
                return Err("a URI with headers ('?') must be enclosed in <>".into());
            }
            let bracket_follows = c.s.get(c.i..).is_some_and(|rest| rest.contains(&b'<'));
            if bracket_follows && uri(spec).is_err() {
                // RFC 4475 §3.1.2.15 "baddn": `Bell, Alexander <sip:…>`.
                return Err("display name is neither tokens nor a quoted string".into());
            }
            (None, spec)
        }
    };
    if uri_text.is_empty() {
        return Err("empty URI".into());
    }
    let uri = uri(uri_text)?;
    let params = params(c)?;
    Ok(NameAddr {
        display,
        uri_text,
        uri,
        params,
    })
}

/// From / To: exactly one name-addr or addr-spec.
pub(super) fn single_name_addr(value: &[u8]) -> Result<NameAddr<'_>, Why> {
    let mut c = Cursor::new(value);
    let na = name_addr(&mut c)?;
    c.skip_ws();
    match c.peek() {
        None => Ok(na),
        Some(b',') => Err("more than one value".into()),
        Some(b) => Err(format!("unexpected {}", shown(b))),
    }
}

/// Contact: `STAR / contact-param *(COMMA contact-param)`; an RFC 2543 comment after
/// an element is tolerated.
pub(super) fn contact_list(value: &[u8]) -> Result<Option<Vec<NameAddr<'_>>>, Why> {
    let trimmed = value.trim_ascii();
    if trimmed == b"*" {
        return Ok(None);
    }
    let mut c = Cursor::new(value);
    let mut out = Vec::new();
    loop {
        out.push(name_addr(&mut c)?);
        if !list_separator(&mut c, true)? {
            return Ok(Some(out));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Via
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ViaParm<'a> {
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub params: Vec<Param<'a>>,
}

impl ViaParm<'_> {
    /// `SIP/2.0/UDP host:port;branch=…` without the LWS RFC 3261 allows inside.
    pub(super) fn canonical(&self) -> String {
        let mut out = format!(
            "SIP/2.0/{} {}",
            String::from_utf8_lossy(self.transport).to_ascii_uppercase(),
            String::from_utf8_lossy(self.host)
        );
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        push_params(&mut out, &self.params);
        out
    }
}

/// `via-parm *(COMMA via-parm)`, `via-parm = sent-protocol LWS sent-by *(SEMI via-params)`.
pub(super) fn via_list(value: &[u8]) -> Result<Vec<ViaParm<'_>>, Why> {
    let mut c = Cursor::new(value);
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        let name = c
            .token()
            .ok_or_else(|| "missing protocol name".to_string())?;
        c.skip_ws();
        c.expect(b'/', "'/' after the protocol name")?;
        c.skip_ws();
        let version = c
            .token()
            .ok_or_else(|| "missing protocol version".to_string())?;
        c.skip_ws();
        c.expect(b'/', "'/' after the protocol version")?;
        c.skip_ws();
        let transport = c.token().ok_or_else(|| "missing transport".to_string())?;
        if !name.eq_ignore_ascii_case(b"SIP") || version != b"2.0" {
            return Err(format!(
                "sent-protocol {}/{} is not SIP/2.0",
                text(name),
                text(version)
            ));
        }
        if !c.skip_ws() {
            return Err("missing space before sent-by".into());
        }
        let (_, host, port) = host_port(&mut c, true)?;
        let params = params(&mut c)?;
        out.push(ViaParm {
            transport,
            host,
            port,
            params,
        });
        if !list_separator(&mut c, true)? {
            return Ok(out);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------

/// `1*DIGIT` read as a number, or None when it is not digits or exceeds `max`.
/// Leading zeros are fine (RFC 4475 §3.1.1.1: `0068` is 68).
pub(super) fn bounded_number(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = s
        .iter()
        .position(|&b| b != b'0')
        .map_or(&[][..], |i| &s[i..]);
    if significant.len() > 19 {
        return None;
    }
    let n = significant
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    (n <= max).then_some(n)
}

pub(super) fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `Call-ID = word [ "@" word ]`.
pub(super) fn call_id(value: &[u8]) -> Result<(), Why> {
    let (left, right) = match value.iter().position(|&b| b == b'@') {
        Some(at) => (value.get(..at).unwrap_or(&[]), value.get(at + 1..)),
        None => (value, None),
    };
    if !is_word(left) || right.is_some_and(|r| !is_word(r)) {
        return Err(
            match value.iter().find(|&&b| !is_word_char(b) && b != b'@') {
                Some(&b) => format!("character {} not allowed", shown(b)),
                None => "empty word".into(),
            },
        );
    }
    Ok(())
}

/// `CSeq = 1*DIGIT LWS Method`: the number (at most 2**32-1) and the method.
pub(super) fn cseq(value: &[u8]) -> Result<(u32, &[u8]), Why> {
    let mut c = Cursor::new(value);
    c.skip_ws();
    let digits = c.take_while(|b| b.is_ascii_digit());
    if digits.is_empty() {
        return Err("no sequence number".into());
    }
    let n = bounded_number(digits, u64::from(u32::MAX))
        .ok_or_else(|| format!("sequence number {} exceeds 2**32-1", text(digits)))?;
    if !c.skip_ws() {
        return Err("no space between number and method".into());
    }
    let method = c.token().ok_or_else(|| "no method".to_string())?;
    c.skip_ws();
    if let Some(b) = c.peek() {
        return Err(format!("unexpected {}", shown(b)));
    }
    Ok((u32::try_from(n).unwrap_or(u32::MAX), method))
}

/// `Expires = delta-seconds`, or the RFC 2543 `SIP-date` (`Thu, 01 Dec 2040 16:00:00
/// GMT`) that old stacks still send. Overlarge delta-seconds are left to the registrar,
/// which may treat them as its default (RFC 4475 §3.1.2.4).
pub(super) fn expires(value: &[u8]) -> Result<(), Why> {
    if is_digits(value) || sip_date(value) {
        Ok(())
    } else {
        Err("neither delta-seconds nor an RFC 1123 date in GMT".into())
    }
}

/// `rfc1123-date = wkday "," SP date1 SP time SP "GMT"`.
fn sip_date(v: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    // "Thu, 01 Dec 2040 16:00:00 GMT" is exactly 29 octets.
    let Ok(v) = <&[u8; 29]>::try_from(v) else {
        return false;
    };
    let num = |s: &[u8], max: u64| bounded_number(s, max);
    DAYS.contains(&&v[0..3])
        && &v[3..5] == b", "
        && num(&v[5..7], 31).is_some_and(|d| d >= 1)
        && v[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && v[11] == b' '
        && num(&v[12..16], 9999).is_some()
        && v[16] == b' '
        && num(&v[17..19], 23).is_some()
        && v[19] == b':'
        && num(&v[20..22], 59).is_some()
        && v[22] == b':'
        && num(&v[23..25], 60).is_some()
        && &v[25..] == b" GMT"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_in_the_user_part_stay_in_the_user_part() {
        let Uri::Sip(u) = uri(b"sip:user;par=u%40example.net@example.com").unwrap() else {
            panic!("not a SIP URI");
        };
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, Host::Name(b"example.com"));
        assert!(u.params.is_empty());
    }

    #[test]
    fn an_unbracketed_ipv6_host_is_refused() {
        assert!(uri(b"sip:2001:db8::10").is_err());
        assert!(uri(b"sip:[2001:db8::10]:5070").is_ok());
        let Uri::Sip(u) = uri(b"sip:[2001:db8::10:5070]").unwrap() else {
            panic!()
        };
        assert_eq!(
            u.port, None,
            "RFC 5118 §4.3: the port is inside the brackets"
        );
    }

    #[test]
    fn uri_headers_and_params_are_split() {
        let Uri::Sip(u) = uri(b"sip:user@example.com;lr;x=1?Route=%3Csip:a%3E&b=").unwrap() else {
            panic!()
        };
        assert_eq!(u.params, b"lr;x=1");
        assert_eq!(u.headers, Some(&b"Route=%3Csip:a%3E&b="[..]));
        assert!(uri(b"sip:user@example.com;").is_err());
        assert!(uri(b"sip:user@example.com;lr=").is_err());
        assert!(uri(b"sip:us%zzer@example.com").is_err());
        assert!(uri(b"sip:user@exa mple.com").is_err());
        assert!(uri(b"sip:user@example.com:70000").is_err());
    }

    #[test]
    fn other_schemes_are_checked_for_their_characters_only() {
        assert!(matches!(uri(b"tel:+1-201-555-0123"), Ok(Uri::Other { .. })));
        assert!(uri(b"soap.beep://192.0.2.103:3002").is_ok());
        assert!(uri(b"1tel:123").is_err());
        assert!(uri(b"tel:").is_err());
        assert!(uri(b"http://a b").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let na =
            single_name_addr(br#""J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8"#)
                .unwrap();
        assert_eq!(na.param("tag"), Some(Some(&b"98asjd8"[..])));
        assert_eq!(
            na.canonical(),
            r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#
        );
        let na = single_name_addr(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(na.display, Some(&b"caller"[..]));
        let na = single_name_addr(b"sip:caller@example.net;tag=1").unwrap();
        assert_eq!(na.canonical(), "<sip:caller@example.net>;tag=1");
        assert!(single_name_addr(br#""Mr. J. User <sip:j.user@example.com>"#).is_err());
        assert!(single_name_addr(b"Bell, Alexander <sip:a.g.bell@example.com>").is_err());
        assert!(single_name_addr(br#""Watson" < sip:t.watson@example.org >"#).is_err());
        assert!(single_name_addr(b"sip:a@b, sip:c@d").is_err());
        assert!(single_name_addr(b"<sip:a@b>;;").is_err());
    }

    #[test]
    fn contact_lists_star_and_comments() {
        assert_eq!(contact_list(b" * ").unwrap(), None);
        let list = contact_list(
            br#""Quoted string \"\"" <sip:jdrosen@bell-labs.com> ; newparam = newvalue ; q = 0.33 (((nested comments) and (more))) , tel:4443322"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(list.len(), 2);
        assert!(contact_list(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert!(contact_list(b"<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").is_ok());
        assert!(contact_list(br#""Joe" <sip:joe@example.org>;;;;"#).is_err());
    }

    #[test]
    fn via_values_with_lws_and_lists() {
        let v = via_list(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].canonical(),
            "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
        );
        let v = via_list(b"SIP/2.0/UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1").unwrap();
        assert_eq!(v[0].port, Some(4000));
        let v = via_list(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255").unwrap();
        assert_eq!(v[0].params[0].value, Some(&b"2001:db8::9:255"[..]));
        assert!(via_list(b"SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(via_list(b"SIP/7.0/UDP c.example.com").is_err());
        assert!(via_list(b"SIP/2.0/TCP srlab.example.com:5060;maddr=192.0.2.5 (NTA 1.0)").is_ok());
    }

    #[test]
    fn scalars() {
        assert_eq!(cseq(b"0009 INVITE").unwrap(), (9, &b"INVITE"[..]));
        assert!(cseq(b"36893488147419103232 REGISTER").is_err());
        assert!(cseq(b"4294967296 INVITE").is_err());
        assert!(cseq(b"4294967295 INVITE").is_ok());
        assert!(cseq(b"8INVITE").is_err());
        assert_eq!(bounded_number(b"0068", 255), Some(68));
        assert_eq!(bounded_number(b"300", 255), None);
        assert!(call_id(b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(call_id(b"a b").is_err());
        assert!(call_id(b"a@b@c").is_err());
        assert!(expires(b"180").is_ok());
        assert!(expires(b"Thu, 01 Dec 2040 16:00:00 GMT").is_ok());
        assert!(expires(b"Thu, 44 Dec 19999 16:00:00 EDT").is_err());
        assert!(expires(b"Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(expires(b"0 0l@company.com").is_err());
    }
}
