//! The OAuth2 login (RFC 3501 AUTHENTICATE with SASL OAUTHBEARER, RFC 7628, or XOAUTH2):
//! which of the two the server offers, the exchange, and its end. A server that refuses
//! the token sends a JSON error challenge and waits for the client's answer before its
//! NO; that answer is sent, and the whole exchange runs under the login deadline, so a
//! refused token is a `LoginFailed` and never a hang.

use async_imap::Authenticator;
use async_imap::imap_proto::{Response, Status};
use tokio::io::AsyncWriteExt as _;
use tokio::time::{Instant, timeout_at};

use super::connect::{ImapClient, ImapConn, capability_name, describe_login_error};
use super::wire::outcome_text;
use super::{Capabilities, ImapError, ImapSettings};
use crate::mail::oauth2::{Mechanism, describe_sasl_error};

/// Our tag for the CAPABILITY sent before login (async-imap numbers its own `A0001`…).
const CAPABILITY_TAG: &str = "LLCAP";

/// Logs in with `token`. `known`: the capabilities of the greeting, if it had them.
pub(super) async fn authenticate(
    settings: &ImapSettings,
    mut client: ImapClient,
    known: Option<Capabilities>,
    token: &str,
) -> Result<ImapConn, ImapError> {
    let login_failed = |reason: String| ImapError::LoginFailed {
        username: settings.username.clone(),
        reason,
    };
    let deadline = Instant::now() + settings.timeouts.login;
    let late = |what: &str| login_failed(format!("{what} within {:?}", settings.timeouts.login));
    let caps = match known {
        Some(caps) => caps,
        // After STARTTLS the old capabilities are void (RFC 3501 6.2.1), and some greetings
        // (Gmail's) carry none.
        None => timeout_at(deadline, ask_capabilities(&mut client))
            .await
            .map_err(|_| late("no answer to CAPABILITY"))?
            .map_err(login_failed)?,
    };
    let Some(mechanism) = Mechanism::choose(|name| caps.has(name)) else {
        let offered: Vec<&str> = caps.iter().filter(|c| c.starts_with("AUTH=")).collect();
        return Err(login_failed(format!(
            "the server offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2, so it cannot take \
             an OAuth2 token (it offers: {})",
            if offered.is_empty() {
                "no SASL mechanism".to_owned()
            } else {
                offered.join(" ")
            }
        )));
    };
    let Some(initial) =
        mechanism.initial_response(&settings.username, token, &settings.host, settings.port)
    else {
        return Err(login_failed(
            "the username or the access token contains a control character".to_owned(),
        ));
    };
    let mut exchange = Exchange {
        mechanism,
        initial: Some(initial),
        server_error: None,
    };
    let outcome = timeout_at(
        deadline,
        client.authenticate(mechanism.name(), &mut exchange),
    )
    .await;
    match outcome {
        Ok(Ok(session)) => {
            tracing::debug!(mechanism = mechanism.name(), "IMAP OAuth2 login ok");
            Ok(session)
        }
        Ok(Err((e, _client))) => Err(login_failed(match exchange.server_error {
            Some(said) => format!(
                "the server refused the OAuth2 access token ({}: {said}): {}",
                mechanism.name(),
                describe_login_error(e)
            ),
            None => format!("{}: {}", mechanism.name(), describe_login_error(e)),
        })),
        Err(_) => Err(late(&format!(
            "no answer to AUTHENTICATE {}",
            mechanism.name()
        ))),
    }
}

/// One SASL exchange: the initial response, then the answer to the error challenge.
struct Exchange {
    mechanism: Mechanism,
    initial: Option<Vec<u8>>,
    server_error: Option<String>,
}

impl Authenticator for &mut Exchange {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        // Without SASL-IR the server starts with an empty challenge ("+ ").
        if let Some(initial) = self.initial.take() {
            return initial;
        }
        // Anything after the initial response is the error report (RFC 7628 §3.2.2);
        // answering it lets the server finish with NO. A server that keeps asking meets
        // the deadline.
        self.server_error
            .get_or_insert_with(|| describe_sasl_error(challenge));
        self.mechanism.error_reply().to_vec()
    }
}

/// CAPABILITY before login. async-imap's unauthenticated `Client` has no command for it
/// (its `run_command` is crate-private), so it is written to the stream directly: nothing
/// is buffered at this point, right after the greeting or the TLS handshake.
async fn ask_capabilities(client: &mut ImapClient) -> Result<Capabilities, String> {
    let request = format!("{CAPABILITY_TAG} CAPABILITY\r\n");
    let stream = client.get_mut();
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending CAPABILITY: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending CAPABILITY: {e}"))?;
    let mut names = Vec::new();
    loop {
        let response = client
            .read_response()
            .await
            .map_err(|e| format!("reading the answer to CAPABILITY: {e}"))?
            .ok_or("the server closed the connection after CAPABILITY")?;
        match response.parsed() {
            Response::Capabilities(caps) => names.extend(caps.iter().map(capability_name)),
            Response::Done {
                tag,
                status,
                outcome,
            } if tag.0 == CAPABILITY_TAG => {
                if *status != Status::Ok {
                    return Err(format!("CAPABILITY refused: {}", outcome_text(outcome)));
                }
                return Ok(Capabilities::from_names(names));
            }
            _ => {}
        }
    }
}
