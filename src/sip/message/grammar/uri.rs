//! Hosts and URIs: `SIP-URI / SIPS-URI / absoluteURI` (RFC 3261 §19.1, §25.1).

use super::{
    Cursor, Why, escaped_run, is_header_char, is_param_char, is_password_char, is_uric,
    is_user_char, shown, text,
};
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::sip::message) enum Host<'a> {
    Name(&'a [u8]),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// `IPv6reference` without its brackets, through the standard library's parser.
/// RFC 5118 §4.10's three-colon form `2001:db8:::192.0.2.1` is refused here.
pub(super) fn ipv6(s: &[u8]) -> Result<Ipv6Addr, Why> {
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
pub(super) fn host_port<'a>(
    c: &mut Cursor<'a>,
    lws: bool,
) -> Result<(Host<'a>, &'a [u8], Option<u16>), Why> {
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
pub(in crate::sip::message) struct SipUri<'a> {
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
pub(in crate::sip::message) enum Uri<'a> {
    Sip(SipUri<'a>),
    /// `absoluteURI`: any other scheme (tel, http, urn, isbn …), checked only for its
    /// characters.
    Other {
        scheme: &'a [u8],
    },
}

impl Uri<'_> {
    pub(in crate::sip::message) fn has_headers(&self) -> bool {
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
pub(in crate::sip::message) fn uri(s: &[u8]) -> Result<Uri<'_>, Why> {
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
