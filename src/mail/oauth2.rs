//! OAuth2 for mailboxes whose server takes no password (Microsoft 365, Gmail): the pure
//! part, values to values.
//!
//! It owns:
//! - the provider presets: token, device authorization endpoints and IMAP scope of
//!   Microsoft 365 and Google ([`preset`]);
//! - the form bodies of the requests: refresh (RFC 6749 §6), device authorization and
//!   device access token (RFC 8628 §3.1, §3.4), with the client authenticating in the body
//!   (RFC 6749 §2.3.1) ([`Client`]);
//! - reading the answers: a token (RFC 6749 §5.1), an error (§5.2), a device
//!   authorization (RFC 8628 §3.2) ([`read_token_answer`], [`read_device_answer`]);
//! - the device flow's polling rules (RFC 8628 §3.5): the interval, `authorization_pending`,
//!   `slow_down` (+5 s), `access_denied`, `expired_token` ([`DevicePolling`]);
//! - when a cached access token is due for refresh ([`AccessToken`]);
//! - the SASL login with a token: which mechanism, OAUTHBEARER (RFC 7628) or XOAUTH2 (the
//!   format of Google and Microsoft), its initial response and the answer to the server's
//!   error challenge ([`Mechanism`]).
//!
//! No I/O and no clock: callers pass `now`. The HTTP calls are in [`endpoint`]; the
//! credentials (`crate::mail::credentials`) keep tokens and secrets; the IMAP adapter runs
//! the SASL exchange.

pub mod endpoint;

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crm::model::OAuth2Provider;

/// The endpoints and scope a provider preset fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub token_url: &'static str,
    pub device_authorization_url: &'static str,
    pub scope: &'static str,
}

/// The endpoints and IMAP scope of a provider. Microsoft's `common` tenant takes work,
/// school and personal accounts; `offline_access` is what makes it grant a refresh token.
pub fn preset(provider: OAuth2Provider) -> Preset {
    match provider {
        OAuth2Provider::Microsoft => Preset {
            token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            device_authorization_url: "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
            scope: "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        },
        OAuth2Provider::Google => Preset {
            token_url: "https://oauth2.googleapis.com/token",
            device_authorization_url: "https://oauth2.googleapis.com/device/code",
            scope: "https://mail.google.com/",
        },
    }
}

/// The grant type of the device access token request (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What a token is assumed to live when the answer does not say (`expires_in` is only
/// RECOMMENDED). Both presets send it; a token that dies earlier is refused at login, and
/// the credentials then fetch a new one.
pub const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest a token is renewed before it expires.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// RFC 8628 §3.5: the interval when the server names none, and what `slow_down` adds.
pub const DEFAULT_INTERVAL_S: u64 = 5;
pub const SLOW_DOWN_S: u64 = 5;

/// A mailbox's OAuth2 client, with its secret, for building requests.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub client_id: String,
    /// `None`: a public client (the device flow of Microsoft needs none).
    pub client_secret: Option<String>,
    pub scope: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A4: the secret never reaches a log line.
        f.debug_struct("Client")
            .field("token_url", &self.token_url)
            .field("device_authorization_url", &self.device_authorization_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// A form body: `application/x-www-form-urlencoded` pairs.
pub type Form = Vec<(&'static str, String)>;

impl Client {
    /// RFC 6749 §6. The scope is sent again: Microsoft requires it on refresh, and the
    /// RFC allows it as long as it is the scope granted.
    pub fn refresh_form(&self, refresh_token: &str) -> Form {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.to_owned()),
            ("scope", self.scope.clone()),
        ];
        self.authenticate(&mut form);
        form
    }

    /// RFC 8628 §3.1: who asks and for what.
    pub fn device_authorization_form(&self) -> Form {
        vec![
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ]
    }

    /// RFC 8628 §3.4: one poll of the token endpoint.
    pub fn device_token_form(&self, device_code: &str) -> Form {
        let mut form = vec![
            ("grant_type", DEVICE_CODE_GRANT.to_owned()),
            ("device_code", device_code.to_owned()),
        ];
        self.authenticate(&mut form);
        form
    }

    /// RFC 6749 §2.3.1 in the body (both presets accept it; a public client sends its id
    /// only).
    fn authenticate(&self, form: &mut Form) {
        form.push(("client_id", self.client_id.clone()));
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.clone()));
        }
    }
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub expires_in: Option<Duration>,
    /// A new refresh token: on a refresh, the server rotated it and the old one may stop
    /// working (RFC 6749 §6), so it must be stored.
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// An error answer of an OAuth2 endpoint (RFC 6749 §5.2, RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// `invalid_grant`, `authorization_pending`, …
    pub error: String,
    pub description: Option<String>,
}

impl fmt::Display for ErrorAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.description {
            Some(text) => write!(f, "{} ({})", self.error, text),
            None => f.write_str(&self.error),
        }
    }
}

/// Why a request to an OAuth2 endpoint did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an OAuth2 error.
    Refused(ErrorAnswer),
    /// The server answered something that is not an OAuth2 answer.
    Unreadable(String),
    /// No answer: connection, TLS, timeout.
    Unreachable(String),
}

impl Failure {
    /// The error of an `url` that failed this way.
    pub fn into_error(self, url: &str) -> OAuth2Error {
        match self {
            Failure::Refused(answer) => OAuth2Error::Refused {
                url: url.to_owned(),
                answer,
                hint: "",
            },
            Failure::Unreadable(reason) => OAuth2Error::BadAnswer {
                url: url.to_owned(),
                reason,
            },
            Failure::Unreachable(reason) => OAuth2Error::Unreachable {
                url: url.to_owned(),
                reason,
            },
        }
    }
}

/// Why a mailbox has no access token, or `leadline mailbox authorize` failed. The
/// messages are shown on the mailbox (`last_error`) and to the operator as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuth2Error {
    #[error(
        "mailbox {mailbox} has no OAuth2 refresh token yet: run `leadline mailbox authorize \
         {mailbox}`, or set oauth2.refresh_token"
    )]
    NotAuthorized { mailbox: String },
    /// `invalid_grant` on a refresh: revoked, expired, or the password changed. Only a new
    /// grant helps.
    #[error(
        "OAuth2 refresh token was rejected by {token_url}: {answer}; run `leadline mailbox \
         authorize {mailbox}`"
    )]
    GrantRejected {
        token_url: String,
        answer: ErrorAnswer,
        mailbox: String,
    },
    #[error("the OAuth2 server {url} refused the request: {answer}{hint}")]
    Refused {
        url: String,
        answer: ErrorAnswer,
        /// What to do about it, when we know (starts with "; ").
        hint: &'static str,
    },
    #[error("cannot reach the OAuth2 server {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("unexpected answer from the OAuth2 server {url}: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("the token endpoint {url} granted no refresh token{hint}")]
    NoRefreshToken { url: String, hint: &'static str },
    #[error("the sign-in was declined: {answer}")]
    Denied { answer: ErrorAnswer },
    #[error("the code expired before the sign-in was completed: run the command again")]
    DeviceCodeExpired,
    #[error(
        "mailbox {mailbox} logs in with a password, not OAuth2: set \"auth\": \"oauth2\" and \
         its \"oauth2\" client first"
    )]
    NotOAuth2 { mailbox: String },
    #[error(
        "mailbox {mailbox} has no oauth2.device_authorization_url: set it (the presets have \
         one), or get a refresh token another way and set oauth2.refresh_token"
    )]
    NoDeviceEndpoint { mailbox: String },
}

impl OAuth2Error {
    /// Nothing changes until someone acts (authorizes the mailbox again, fixes the
    /// client): retrying sooner or later gives the same answer.
    pub fn awaits_operator(&self) -> bool {
        !matches!(
            self,
            OAuth2Error::Unreachable { .. } | OAuth2Error::BadAnswer { .. }
        )
    }
}

/// Reads a token endpoint's answer (RFC 6749 §5.1 and §5.2). `status` is the HTTP status.
pub fn read_token_answer(status: u16, body: &[u8]) -> Result<Token, Failure> {
    let object = read_object(status, body)?;
    let access_token = text(&object, "access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Unreadable("the answer has no access_token".into()))?;
    match text(&object, "token_type") {
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(kind) => {
            return Err(Failure::Unreadable(format!(
                "token_type {kind:?} is not Bearer, which IMAP cannot use"
            )));
        }
        None => return Err(Failure::Unreadable("the answer has no token_type".into())),
    }
    Ok(Token {
        access_token,
        expires_in: seconds(&object, "expires_in")?,
        refresh_token: text(&object, "refresh_token").filter(|t| !t.is_empty()),
        scope: text(&object, "scope"),
    })
}

/// The device authorization answer (RFC 8628 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorization {
    pub device_code: String,
    /// What the user types at `verification_uri`.
    pub user_code: String,
    pub verification_uri: String,
    /// The URI with the code in it, when the server gives one.
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    /// `None`: the server leaves it to the client (5 s).
    pub interval: Option<Duration>,
}

/// Reads a device authorization answer. Google spells `verification_uri` as
/// `verification_url` (the name of the draft it implemented first).
pub fn read_device_answer(status: u16, body: &[u8]) -> Result<DeviceAuthorization, Failure> {
    let object = read_object(status, body)?;
    let required = |name: &str| {
        text(&object, name)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Unreadable(format!("the answer has no {name}")))
    };
    Ok(DeviceAuthorization {
        device_code: required("device_code")?,
        user_code: required("user_code")?,
        verification_uri: required("verification_uri").or_else(|_| required("verification_url"))?,
        verification_uri_complete: text(&object, "verification_uri_complete"),
        expires_in: seconds(&object, "expires_in")?
            .ok_or_else(|| Failure::Unreadable("the answer has no expires_in".into()))?,
        interval: seconds(&object, "interval")?,
    })
}

/// A JSON object answer; an error answer becomes [`Failure::Refused`].
fn read_object(status: u16, body: &[u8]) -> Result<serde_json::Map<String, Value>, Failure> {
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    if let Some(object) = &parsed
        && let Some(error) = text(object, "error")
    {
        return Err(Failure::Refused(ErrorAnswer {
            error,
            description: text(object, "error_description").map(|d| cut(&d)),
        }));
    }
    match parsed {
        Some(object) if status == 200 => Ok(object),
        _ => Err(Failure::Unreadable(format!(
            "HTTP {status}: {}",
            cut(&String::from_utf8_lossy(body))
        ))),
    }
}

fn text(object: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    object.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// A number of seconds; some servers send it as a string.
fn seconds(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<Duration>, Failure> {
    let bad = || Failure::Unreadable(format!("{name} is not a number of seconds"));
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(bad),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(|s| Some(Duration::from_secs(s)))
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Server text in our errors is cut, so an HTML error page does not fill a log line.
fn cut(text: &str) -> String {
    const MAX: usize = 200;
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An access token as cached: used until shortly before it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: String,
    /// From here on the token is renewed rather than used.
    pub refresh_at: Instant,
    pub expires_at: Instant,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AccessToken {
    /// `requested`: when the request that got it was sent, so its lifetime is never
    /// overestimated by the time the answer took.
    pub fn new(token: &Token, requested: Instant) -> AccessToken {
        let lifetime = token.expires_in.unwrap_or(ASSUMED_LIFETIME);
        AccessToken {
            value: token.access_token.clone(),
            refresh_at: requested + lifetime - refresh_margin(lifetime),
            expires_at: requested + lifetime,
        }
    }

    /// Whether to use it at `now` rather than get a new one.
    pub fn usable_at(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// How long before it expires a token is renewed: a quarter of its lifetime, at most 5
/// minutes. A login takes seconds, so an hour's token is renewed at 55 minutes and a
/// 2-second test token at 1.5 seconds.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(MAX_REFRESH_MARGIN)
}

/// What the device flow does next (RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStep {
    /// The user signed in.
    Granted(Token),
    /// Not yet: poll again after this long.
    PollAfter(Duration),
    /// The user declined, or the server refused the client: stop.
    Failed(OAuth2Error),
}

/// The polling of the device flow, from the device authorization answer to a token or a
/// failure. Times are in units of `second`: a real second except in tests, which poll a
/// local server and need not wait RFC 8628's 5 s.
#[derive(Debug, Clone)]
pub struct DevicePolling {
    interval: Duration,
    expires_at: Instant,
    second: Duration,
    token_url: String,
}

impl DevicePolling {
    pub fn new(
        authorization: &DeviceAuthorization,
        token_url: &str,
        started: Instant,
        second: Duration,
    ) -> DevicePolling {
        let interval_s = authorization
            .interval
            .map_or(DEFAULT_INTERVAL_S, |i| i.as_secs().max(1));
        DevicePolling {
            interval: second * u32::try_from(interval_s).unwrap_or(u32::MAX),
            expires_at: started + scale(authorization.expires_in, second),
            second,
            token_url: token_url.to_owned(),
        }
    }

    /// How long to wait before the next poll (also before the first).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What to do after the token endpoint answered `answer` at `now`.
    pub fn next(&mut self, answer: Result<Token, Failure>, now: Instant) -> DeviceStep {
        let error = match answer {
            Ok(token) => return DeviceStep::Granted(token),
            Err(Failure::Refused(answer)) => answer,
            // §3.5: a client whose poll timed out SHOULD back off exponentially.
            Err(Failure::Unreachable(_)) => {
                self.interval = self.interval.saturating_mul(2);
                return self.poll_again(now);
            }
            Err(other) => return DeviceStep::Failed(other.into_error(&self.token_url)),
        };
        match error.error.as_str() {
            "authorization_pending" => self.poll_again(now),
            "slow_down" => {
                self.interval += self.second * SLOW_DOWN_S as u32;
                self.poll_again(now)
            }
            // Microsoft's name for access_denied.
            "access_denied" | "authorization_declined" => {
                DeviceStep::Failed(OAuth2Error::Denied { answer: error })
            }
            "expired_token" => DeviceStep::Failed(OAuth2Error::DeviceCodeExpired),
            _ => DeviceStep::Failed(Failure::Refused(error).into_error(&self.token_url)),
        }
    }

    fn poll_again(&self, now: Instant) -> DeviceStep {
        if now + self.interval >= self.expires_at {
            DeviceStep::Failed(OAuth2Error::DeviceCodeExpired)
        } else {
            DeviceStep::PollAfter(self.interval)
        }
    }
}

fn scale(duration: Duration, second: Duration) -> Duration {
    second.mul_f64(duration.as_secs_f64())
}

/// A SASL mechanism that carries an OAuth2 bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 7628, the standard (Gmail, Dovecot, …).
    OAuthBearer,
    /// The older format Google and Microsoft defined; the only one Microsoft 365 offers.
    XOAuth2,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// The mechanism to use given what the server advertises (`offers("AUTH=XOAUTH2")`):
    /// the standard one when offered.
    pub fn choose(offers: impl Fn(&str) -> bool) -> Option<Mechanism> {
        [Mechanism::OAuthBearer, Mechanism::XOAuth2]
            .into_iter()
            .find(|m| offers(&format!("AUTH={}", m.name())))
    }

    /// The client's first message. `None` when the user or token contains a byte the
    /// format uses as a separator (a token is ASCII without controls, RFC 6750 §2.1).
    pub fn initial_response(
        self,
        user: &str,
        token: &str,
        host: &str,
        port: u16,
    ) -> Option<Vec<u8>> {
        if [user, token, host].iter().any(|s| s.contains('\x01')) {
            return None;
        }
        Some(
            match self {
                Mechanism::XOAuth2 => xoauth2(user, token),
                Mechanism::OAuthBearer => oauthbearer(user, token, host, port),
            }
            .into_bytes(),
        )
    }

    /// The answer to the server's error challenge, after which the server sends its NO:
    /// a single %x01 for OAUTHBEARER (RFC 7628 §3.2.3); an empty response for XOAUTH2, as
    /// Google documents it.
    pub fn error_reply(self) -> &'static [u8] {
        match self {
            Mechanism::OAuthBearer => b"\x01",
            Mechanism::XOAuth2 => b"",
        }
    }
}

/// `user=<user>^Aauth=Bearer <token>^A^A`.
pub fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// RFC 7628 §3.1: a GS2 header naming the user (RFC 5801 `saslname`: `,` and `=` escaped),
/// then host, port and the token as key-value pairs.
pub fn oauthbearer(user: &str, token: &str, host: &str, port: u16) -> String {
    let authzid = user.replace('=', "=3D").replace(',', "=2C");
    format!("n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
}

/// The server's error challenge in words: RFC 7628 §3.2.2 sends JSON with `status`
/// (`invalid_token`, or an HTTP code from XOAUTH2 servers), maybe `scope`.
pub fn describe_sasl_error(challenge: &[u8]) -> String {
    let Ok(object) = serde_json::from_slice::<serde_json::Map<String, Value>>(challenge) else {
        return cut(&String::from_utf8_lossy(challenge));
    };
    let field = |name: &str| match object.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let mut parts = Vec::new();
    if let Some(status) = field("status") {
        parts.push(format!("status {status}"));
    }
    if let Some(scope) = field("scope") {
        parts.push(format!("scope {scope}"));
    }
    if parts.is_empty() {
        cut(&String::from_utf8_lossy(challenge))
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(secret: Option<&str>) -> Client {
        Client {
            token_url: "https://login.example.com/token".into(),
            device_authorization_url: Some("https://login.example.com/device".into()),
            client_id: "client-1".into(),
            client_secret: secret.map(str::to_owned),
            scope: "imap offline_access".into(),
        }
    }

    fn token(expires_in: Option<u64>) -> Token {
        Token {
            access_token: "at".into(),
            expires_in: expires_in.map(Duration::from_secs),
            refresh_token: None,
            scope: None,
        }
    }

    fn refused(error: &str) -> Result<Token, Failure> {
        Err(Failure::Refused(ErrorAnswer {
            error: error.into(),
            description: None,
        }))
    }

    #[test]
    fn presets_name_the_documented_endpoints_and_scopes() {
        let microsoft = preset(OAuth2Provider::Microsoft);
        assert_eq!(
            microsoft.token_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert_eq!(
            microsoft.device_authorization_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
        );
        assert_eq!(
            microsoft.scope,
            "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
        );
        let google = preset(OAuth2Provider::Google);
        assert_eq!(google.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(
            google.device_authorization_url,
            "https://oauth2.googleapis.com/device/code"
        );
        assert_eq!(google.scope, "https://mail.google.com/");
    }

    #[test]
    fn refresh_form_authenticates_in_the_body() {
        let form = client(Some("s3cret")).refresh_form("rt-1");
        assert_eq!(
            form,
            vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", "rt-1".to_owned()),
                ("scope", "imap offline_access".to_owned()),
                ("client_id", "client-1".to_owned()),
                ("client_secret", "s3cret".to_owned()),
            ]
        );
        // A public client sends its id only.
        assert!(
            !client(None)
                .refresh_form("rt-1")
                .iter()
                .any(|(k, _)| *k == "client_secret")
        );
    }

    #[test]
    fn device_forms() {
        let c = client(Some("s3cret"));
        assert_eq!(
            c.device_authorization_form(),
            vec![
                ("client_id", "client-1".to_owned()),
                ("scope", "imap offline_access".to_owned())
            ]
        );
        let poll = c.device_token_form("dc-1");
        assert!(poll.contains(&("grant_type", DEVICE_CODE_GRANT.to_owned())));
        assert!(poll.contains(&("device_code", "dc-1".to_owned())));
        assert!(poll.contains(&("client_secret", "s3cret".to_owned())));
    }

    #[test]
    fn a4_debug_hides_secrets_and_tokens() {
        let shown = format!(
            "{:?} {:?} {:?}",
            client(Some("s3cret")),
            Token {
                access_token: "at-value".into(),
                expires_in: None,
                refresh_token: Some("rt-value".into()),
                scope: None,
            },
            AccessToken::new(&token(None), Instant::now())
        );
        for secret in ["s3cret", "at-value", "rt-value", "\"at\""] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn reads_a_token_answer() {
        let body = br#"{"access_token":"eyJ0","token_type":"Bearer","expires_in":3599,
            "refresh_token":"rt-2","scope":"imap"}"#;
        let token = read_token_answer(200, body).unwrap();
        assert_eq!(token.access_token, "eyJ0");
        assert_eq!(token.expires_in, Some(Duration::from_secs(3599)));
        assert_eq!(token.refresh_token.as_deref(), Some("rt-2"));
        // expires_in as a string, token_type in lower case, no refresh token.
        let body = br#"{"access_token":"a","token_type":"bearer","expires_in":"60"}"#;
        let token = read_token_answer(200, body).unwrap();
        assert_eq!(token.expires_in, Some(Duration::from_secs(60)));
        assert_eq!(token.refresh_token, None);
    }

    #[test]
    fn reads_error_answers_and_rejects_nonsense() {
        let body = br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
        assert_eq!(
            read_token_answer(400, body),
            Err(Failure::Refused(ErrorAnswer {
                error: "invalid_grant".into(),
                description: Some("Token has been expired or revoked.".into())
            }))
        );
        let Err(Failure::Unreadable(reason)) = read_token_answer(502, b"<html>Bad gateway</html>")
        else {
            panic!("HTML is no answer");
        };
        assert!(reason.contains("HTTP 502"), "{reason}");
        for body in [
            &br#"{"token_type":"Bearer"}"#[..],
            br#"{"access_token":"a","token_type":"mac"}"#,
            br#"{"access_token":"a"}"#,
            br#"{"access_token":"a","token_type":"Bearer","expires_in":-1}"#,
            b"[]",
        ] {
            assert!(
                matches!(read_token_answer(200, body), Err(Failure::Unreadable(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A long description is cut.
        let long = format!(
            r#"{{"error":"x","error_description":"{}"}}"#,
            "é".repeat(500)
        );
        let Err(Failure::Refused(answer)) = read_token_answer(400, long.as_bytes()) else {
            panic!("an error answer");
        };
        assert!(answer.description.unwrap().len() < 260);
    }

    #[test]
    fn reads_device_answers_of_both_spellings() {
        let microsoft = br#"{"device_code":"dc","user_code":"ABCD-EFGH",
            "verification_uri":"https://microsoft.com/devicelogin","expires_in":900,
            "interval":5,"message":"To sign in, use a web browser"}"#;
        let answer = read_device_answer(200, microsoft).unwrap();
        assert_eq!(answer.user_code, "ABCD-EFGH");
        assert_eq!(answer.verification_uri, "https://microsoft.com/devicelogin");
        assert_eq!(answer.expires_in, Duration::from_secs(900));
        assert_eq!(answer.interval, Some(Duration::from_secs(5)));
        let google = br#"{"device_code":"dc","user_code":"GQVQ-JKEC",
            "verification_url":"https://www.google.com/device","expires_in":1800}"#;
        let answer = read_device_answer(200, google).unwrap();
        assert_eq!(answer.verification_uri, "https://www.google.com/device");
        assert_eq!(answer.interval, None);
        let scope = br#"{"error":"invalid_scope","error_description":"Invalid device flow scope: https://mail.google.com/"}"#;
        assert!(matches!(
            read_device_answer(400, scope),
            Err(Failure::Refused(ErrorAnswer { error, .. })) if error == "invalid_scope"
        ));
        assert!(matches!(
            read_device_answer(200, br#"{"device_code":"dc","expires_in":5}"#),
            Err(Failure::Unreadable(_))
        ));
    }

    #[test]
    fn a_token_is_renewed_before_it_expires() {
        let start = Instant::now();
        let hour = AccessToken::new(&token(Some(3600)), start);
        assert!(hour.usable_at(start + Duration::from_secs(54 * 60)));
        assert!(!hour.usable_at(start + Duration::from_secs(55 * 60)));
        assert_eq!(hour.expires_at, start + Duration::from_secs(3600));
        // A 2-second test token is still used for 1.5 s, not thrown away at once.
        let short = AccessToken::new(&token(Some(2)), start);
        assert!(short.usable_at(start + Duration::from_millis(1400)));
        assert!(!short.usable_at(start + Duration::from_millis(1500)));
        // No expires_in: an hour is assumed.
        let unknown = AccessToken::new(&token(None), start);
        assert_eq!(unknown.expires_at, start + ASSUMED_LIFETIME);
        // A token valid for 0 s is never used.
        assert!(!AccessToken::new(&token(Some(0)), start).usable_at(start));
    }

    fn device(interval: Option<u64>, expires_in: u64) -> DeviceAuthorization {
        DeviceAuthorization {
            device_code: "dc".into(),
            user_code: "ABCD".into(),
            verification_uri: "https://example.com/device".into(),
            verification_uri_complete: None,
            expires_in: Duration::from_secs(expires_in),
            interval: interval.map(Duration::from_secs),
        }
    }

    #[test]
    fn device_polling_follows_rfc_8628() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        // No interval: 5 s.
        let polling = DevicePolling::new(&device(None, 600), "t", start, second);
        assert_eq!(polling.interval(), Duration::from_secs(5));

        let mut polling = DevicePolling::new(&device(Some(2), 600), "t", start, second);
        assert_eq!(polling.interval(), Duration::from_secs(2));
        assert_eq!(
            polling.next(refused("authorization_pending"), start),
            DeviceStep::PollAfter(Duration::from_secs(2))
        );
        // slow_down adds 5 s for this and every later poll.
        assert_eq!(
            polling.next(refused("slow_down"), start),
            DeviceStep::PollAfter(Duration::from_secs(7))
        );
        assert_eq!(
            polling.next(refused("authorization_pending"), start),
            DeviceStep::PollAfter(Duration::from_secs(7))
        );
        // A timed-out poll doubles the interval.
        assert_eq!(
            polling.next(Err(Failure::Unreachable("timeout".into())), start),
            DeviceStep::PollAfter(Duration::from_secs(14))
        );
        assert_eq!(
            polling.next(Ok(token(Some(60))), start),
            DeviceStep::Granted(token(Some(60)))
        );
        for denied in ["access_denied", "authorization_declined"] {
            assert!(matches!(
                polling.next(refused(denied), start),
                DeviceStep::Failed(OAuth2Error::Denied { .. })
            ));
        }
        assert_eq!(
            polling.next(refused("expired_token"), start),
            DeviceStep::Failed(OAuth2Error::DeviceCodeExpired)
        );
        assert!(matches!(
            polling.next(refused("invalid_client"), start),
            DeviceStep::Failed(OAuth2Error::Refused { .. })
        ));
    }

    #[test]
    fn device_polling_stops_when_the_code_expires() {
        let start = Instant::now();
        let mut polling =
            DevicePolling::new(&device(Some(5), 12), "t", start, Duration::from_secs(1));
        assert!(matches!(
            polling.next(
                refused("authorization_pending"),
                start + Duration::from_secs(6)
            ),
            DeviceStep::PollAfter(_)
        ));
        assert_eq!(
            polling.next(
                refused("authorization_pending"),
                start + Duration::from_secs(7)
            ),
            DeviceStep::Failed(OAuth2Error::DeviceCodeExpired)
        );
    }

    #[test]
    fn device_polling_scales_with_the_test_second() {
        let start = Instant::now();
        let unit = Duration::from_millis(10);
        let mut polling = DevicePolling::new(&device(Some(1), 600), "t", start, unit);
        assert_eq!(polling.interval(), unit);
        assert_eq!(
            polling.next(refused("slow_down"), start),
            DeviceStep::PollAfter(unit * 6)
        );
    }

    #[test]
    fn sasl_strings() {
        assert_eq!(
            xoauth2("anna@example.com", "ya29.x"),
            "user=anna@example.com\x01auth=Bearer ya29.x\x01\x01"
        );
        // RFC 7628 §4.1's example, with the user escaped as a saslname.
        assert_eq!(
            oauthbearer(
                "user@example.com",
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
                "server.example.com",
                143
            ),
            "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer \
             vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        assert!(oauthbearer("a,b=c", "t", "h", 1).starts_with("n,a=a=2Cb=3Dc,\x01"));
        assert_eq!(
            Mechanism::XOAuth2.initial_response("u", "t", "h", 993),
            Some(xoauth2("u", "t").into_bytes())
        );
        assert_eq!(
            Mechanism::OAuthBearer.initial_response("u", "t\x01auth=x", "h", 993),
            None
        );
        assert_eq!(Mechanism::OAuthBearer.error_reply(), b"\x01");
        assert_eq!(Mechanism::XOAuth2.error_reply(), b"");
    }

    #[test]
    fn prefers_oauthbearer_when_offered() {
        let offered = |caps: &'static [&'static str]| move |name: &str| caps.contains(&name);
        assert_eq!(
            Mechanism::choose(offered(&["AUTH=PLAIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"])),
            Some(Mechanism::OAuthBearer)
        );
        assert_eq!(
            Mechanism::choose(offered(&["AUTH=PLAIN", "AUTH=XOAUTH2"])),
            Some(Mechanism::XOAuth2)
        );
        assert_eq!(Mechanism::choose(offered(&["AUTH=PLAIN"])), None);
    }

    #[test]
    fn describes_sasl_error_challenges() {
        assert_eq!(
            describe_sasl_error(br#"{"status":"invalid_token","scope":"mail"}"#),
            "status invalid_token, scope mail"
        );
        assert_eq!(
            describe_sasl_error(br#"{"status":"401","schemes":"bearer","scope":"mail"}"#),
            "status 401, scope mail"
        );
        assert_eq!(describe_sasl_error(b"not json"), "not json");
    }

    #[test]
    fn grant_rejected_names_the_endpoint_and_the_fix() {
        let error = OAuth2Error::GrantRejected {
            token_url: "https://login.example.com/token".into(),
            answer: ErrorAnswer {
                error: "invalid_grant".into(),
                description: Some("revoked".into()),
            },
            mailbox: "mb-1".into(),
        };
        assert_eq!(
            error.to_string(),
            "OAuth2 refresh token was rejected by https://login.example.com/token: \
             invalid_grant (revoked); run `leadline mailbox authorize mb-1`"
        );
        assert!(error.awaits_operator());
        assert!(
            !OAuth2Error::Unreachable {
                url: "u".into(),
                reason: "r".into()
            }
            .awaits_operator()
        );
    }
}
