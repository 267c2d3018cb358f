//! Header field values built from name-addr, parameters and lists: From, To, Contact and
//! Via (RFC 3261 §20, §25.1).

use super::uri::{Uri, host_port, ipv6, uri};
use super::{Cursor, Why, is_token_char, is_ws, shown, text};

/// `generic-param = token [ EQUAL gen-value ]`, `gen-value = token / host / quoted-string`.
/// A value may also be a bare IPv6 address, as RFC 3261's `via-received` allows
/// (RFC 5118 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::sip::message) struct Param<'a> {
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
pub(in crate::sip::message) struct NameAddr<'a> {
    /// The display name as written: a quoted-string with its quotes, or tokens.
    pub display: Option<&'a [u8]>,
    pub uri_text: &'a [u8],
    pub uri: Uri<'a>,
    pub params: Vec<Param<'a>>,
}

impl NameAddr<'_> {
    pub(in crate::sip::message) fn param(&self, name: &str) -> Option<Option<&[u8]>> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|p| p.value)
    }

    /// `"display" <uri>;name=value`, the form rsip's typed headers read correctly: no LWS
    /// around `;` and `=` (rsip keeps it in the parameter name, so `tag = x` is no tag).
    pub(in crate::sip::message) fn canonical(&self) -> String {
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

pub(in crate::sip::message) fn push_params(out: &mut String, params: &[Param<'_>]) {
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
pub(in crate::sip::message) fn single_name_addr(value: &[u8]) -> Result<NameAddr<'_>, Why> {
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
pub(in crate::sip::message) fn contact_list(
    value: &[u8],
) -> Result<Option<Vec<NameAddr<'_>>>, Why> {
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
pub(in crate::sip::message) struct ViaParm<'a> {
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub params: Vec<Param<'a>>,
}

impl ViaParm<'_> {
    /// `SIP/2.0/UDP host:port;branch=…` without the LWS RFC 3261 allows inside.
    pub(in crate::sip::message) fn canonical(&self) -> String {
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
pub(in crate::sip::message) fn via_list(value: &[u8]) -> Result<Vec<ViaParm<'_>>, Why> {
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
