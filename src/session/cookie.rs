//! The session cookie and the checks a cookie-authenticated request must pass.
//!
//! The cookie carries a random 256-bit token; the server keeps only its SHA-256. A browser
//! sends the cookie with every request to the gateway, also with requests another site
//! makes it send, so a change made with the cookie must prove it came from the console:
//! it carries the CSRF token in `X-CSRF-Token` (which another site cannot read), and an
//! `Origin`, when the browser sends one, must be the gateway's own. The CSRF token is
//! derived from the session token (HMAC-SHA256 under a fixed label), so it needs no
//! storage and is known only to whoever holds the cookie or was handed the token at
//! sign-in.

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::uri::Scheme;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The cookie's name.
pub const COOKIE_NAME: &str = "leadline_session";
/// The request header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// What the CSRF token is derived under: a fixed label, so the same session token never
/// yields the same bytes for another purpose.
const CSRF_LABEL: &[u8] = b"leadline console csrf v1";

/// Why a cookie-authenticated change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("send the session's CSRF token (from sign-in or GET /api/v1/session) in X-CSRF-Token")]
    MissingToken,
    #[error("X-CSRF-Token does not belong to this session")]
    WrongToken,
    #[error("the request comes from another site (Origin differs from Host)")]
    ForeignOrigin,
}

/// A new session token: 256 random bits, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The session token in the request's cookies, if any. Several `Cookie` headers (HTTP/2)
/// are read as one list; the first non-empty `leadline_session` wins.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE_NAME && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"'))
}

/// `Set-Cookie` that signs the browser in. No `Max-Age`: the cookie ends with the browser
/// session, the server ends the session itself after its idle or absolute limit.
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the request reached us over HTTPS: the URI's scheme (a TLS listener), or
/// `X-Forwarded-Proto: https` from a reverse proxy that terminates TLS. Trusting the
/// header from anyone is safe here: it only adds `Secure` to the client's own cookie, and
/// a client that lies about it only keeps its browser from sending the cookie back over
/// plain HTTP.
pub fn is_https(parts: &Parts) -> bool {
    if parts.uri.scheme() == Some(&Scheme::HTTPS) {
        return true;
    }
    parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        // A chain of proxies lists the first hop first: that is the browser's.
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The CSRF token of a session: hex HMAC-SHA256 of the session token under a fixed label.
pub fn csrf_token(session_token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(session_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(CSRF_LABEL);
    hex::encode(mac.finalize().into_bytes())
}

/// Methods that change nothing and so need no CSRF token (a browser's cross-site GET
/// cannot read the answer, and `SameSite=Strict` keeps the cookie off it anyway).
pub fn is_safe(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS].contains(method)
}

/// The checks of a request authenticated by the session cookie whose token is
/// `session_token`: a change must carry the session's CSRF token and, if the browser sent
/// an `Origin`, come from the gateway's own origin.
pub fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    session_token: &str,
) -> Result<(), CsrfError> {
    if is_safe(method) {
        return Ok(());
    }
    check_origin(headers)?;
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(CsrfError::MissingToken)?;
    let expected = csrf_token(session_token);
    if bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(CsrfError::WrongToken)
    }
}

/// An `Origin` header, when present, must name the host and port the request was sent to
/// (`Host`). Default ports are ignored on both sides; `Origin: null` (a sandboxed page, a
/// redirect across sites) is never ours.
pub fn check_origin(headers: &HeaderMap) -> Result<(), CsrfError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(|o| o.parse::<Uri>().ok())
        .ok_or(CsrfError::ForeignOrigin)?;
    let (Some(scheme), Some(authority)) = (origin.scheme_str(), origin.authority()) else {
        return Err(CsrfError::ForeignOrigin);
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(CsrfError::ForeignOrigin),
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .ok_or(CsrfError::ForeignOrigin)?;
    let same_host = authority.host().eq_ignore_ascii_case(host.host());
    let same_port =
        authority.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port);
    if same_host && same_port {
        Ok(())
    } else {
        Err(CsrfError::ForeignOrigin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn parts(uri: &str, pairs: &[(&'static str, &str)]) -> Parts {
        let mut req = Request::builder().uri(uri).body(()).unwrap();
        *req.headers_mut() = headers(pairs);
        req.into_parts().0
    }

    #[test]
    fn a5_the_cookie_is_http_only_strict_on_the_whole_site_and_secure_over_https() {
        assert_eq!(
            set_cookie("abc", false),
            "leadline_session=abc; HttpOnly; SameSite=Strict; Path=/"
        );
        assert_eq!(
            set_cookie("abc", true),
            "leadline_session=abc; HttpOnly; SameSite=Strict; Path=/; Secure"
        );
        assert!(clear_cookie(false).contains("leadline_session=;"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert!(clear_cookie(true).ends_with("; Secure"));
    }

    #[test]
    fn tokens_are_256_random_bits() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn the_session_token_is_found_among_other_cookies() {
        let h = headers(&[("cookie", "theme=dark; leadline_session=tok123; lang=de")]);
        assert_eq!(session_token(&h), Some("tok123"));
        let h = headers(&[("cookie", "theme=dark"), ("cookie", "leadline_session=t2")]);
        assert_eq!(session_token(&h), Some("t2"));
        assert_eq!(
            session_token(&headers(&[("cookie", "leadline_session=")])),
            None
        );
        assert_eq!(
            session_token(&headers(&[("cookie", "xleadline_session=a")])),
            None
        );
        assert_eq!(session_token(&HeaderMap::new()), None);
    }

    #[test]
    fn https_is_the_uri_scheme_or_the_proxys_forwarded_proto() {
        assert!(!is_https(&parts("/api/v1/session", &[])));
        assert!(is_https(&parts(
            "https://crm.example.com/api/v1/session",
            &[]
        )));
        assert!(is_https(&parts(
            "/api/v1/session",
            &[("x-forwarded-proto", "HTTPS")]
        )));
        assert!(is_https(&parts(
            "/api/v1/session",
            &[("x-forwarded-proto", "https, http")]
        )));
        assert!(!is_https(&parts(
            "/api/v1/session",
            &[("x-forwarded-proto", "http")]
        )));
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let token = csrf_token("session-a");
        assert_eq!(token.len(), 64);
        assert_eq!(token, csrf_token("session-a"));
        assert_ne!(token, csrf_token("session-b"));
        assert_ne!(
            token,
            crate::http::auth::hash_token("session-a"),
            "not the stored hash of the session token"
        );
    }

    #[test]
    fn a5_a_change_needs_the_sessions_csrf_token_reads_do_not() {
        let good = csrf_token("s");
        assert_eq!(check_csrf(&Method::GET, &HeaderMap::new(), "s"), Ok(()));
        assert_eq!(check_csrf(&Method::HEAD, &HeaderMap::new(), "s"), Ok(()));
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(
                check_csrf(&method, &HeaderMap::new(), "s"),
                Err(CsrfError::MissingToken)
            );
            assert_eq!(
                check_csrf(&method, &headers(&[("x-csrf-token", "00")]), "s"),
                Err(CsrfError::WrongToken)
            );
            assert_eq!(
                check_csrf(
                    &method,
                    &headers(&[("x-csrf-token", &csrf_token("t"))]),
                    "s"
                ),
                Err(CsrfError::WrongToken)
            );
            assert_eq!(
                check_csrf(&method, &headers(&[("x-csrf-token", &good)]), "s"),
                Ok(())
            );
        }
    }

    #[test]
    fn a5_a_change_from_another_origin_is_refused_even_with_the_token() {
        let good = csrf_token("s");
        let with = |origin: &str, host: &str| {
            check_csrf(
                &Method::POST,
                &headers(&[("x-csrf-token", &good), ("origin", origin), ("host", host)]),
                "s",
            )
        };
        assert_eq!(with("http://127.0.0.1:8080", "127.0.0.1:8080"), Ok(()));
        assert_eq!(with("https://crm.example.com", "crm.example.com"), Ok(()));
        assert_eq!(
            with("https://CRM.example.com:443", "crm.example.com"),
            Ok(())
        );
        assert_eq!(with("http://crm.example.com", "crm.example.com:80"), Ok(()));
        for (origin, host) in [
            ("https://evil.example", "crm.example.com"),
            ("http://127.0.0.1:9999", "127.0.0.1:8080"),
            ("https://crm.example.com", "crm.example.com:8443"),
            ("null", "crm.example.com"),
            ("ftp://crm.example.com", "crm.example.com"),
        ] {
            assert_eq!(
                with(origin, host),
                Err(CsrfError::ForeignOrigin),
                "{origin} vs {host}"
            );
        }
        // Without a Host to compare with, an Origin cannot be checked.
        assert_eq!(
            check_origin(&headers(&[("origin", "http://a")])),
            Err(CsrfError::ForeignOrigin)
        );
        assert_eq!(check_origin(&HeaderMap::new()), Ok(()));
    }
}
