//! The HTTP calls of OAuth2: form POSTs to a token or device authorization endpoint
//! (reqwest with rustls), read by the pure functions of [`super`]. Nothing is decided here.

use std::time::Duration;

use super::{
    Client, DeviceAuthorization, Failure, Form, OAuth2Error, Token, read_device_answer,
    read_token_answer,
};

/// Connect and answer deadlines: a token endpoint that hangs costs a login attempt this
/// long, never a stuck poller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger answers are not OAuth2 answers.
const MAX_ANSWER: usize = 64 * 1024;

/// A client for OAuth2 endpoints; cheap to clone.
#[derive(Clone, Debug)]
pub struct Endpoints {
    http: Result<reqwest::Client, String>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints::new()
    }
}

impl Endpoints {
    pub fn new() -> Endpoints {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirected POST would carry the client secret and the refresh token to
            // wherever the redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Endpoints { http }
    }

    /// RFC 6749 §6: a new access token for the refresh token.
    pub async fn refresh(&self, client: &Client, refresh_token: &str) -> Result<Token, Failure> {
        let (status, body) = self
            .post(&client.token_url, &client.refresh_form(refresh_token))
            .await?;
        read_token_answer(status, &body)
    }

    /// RFC 8628 §3.1: a device code and the user code to show.
    pub async fn authorize_device(
        &self,
        client: &Client,
        url: &str,
    ) -> Result<DeviceAuthorization, OAuth2Error> {
        let (status, body) = self
            .post(url, &client.device_authorization_form())
            .await
            .map_err(|f| f.into_error(url))?;
        read_device_answer(status, &body).map_err(|f| f.into_error(url))
    }

    /// RFC 8628 §3.4: one poll for the device code's tokens.
    pub async fn poll_device(&self, client: &Client, device_code: &str) -> Result<Token, Failure> {
        let (status, body) = self
            .post(&client.token_url, &client.device_token_form(device_code))
            .await?;
        read_token_answer(status, &body)
    }

    async fn post(&self, url: &str, form: &Form) -> Result<(u16, Vec<u8>), Failure> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| Failure::Unreachable(e.clone()))?;
        let mut response = http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| Failure::Unreachable(describe(e)))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure::Unreachable(describe(e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Failure::Unreadable(format!(
                    "HTTP {status}: an answer over {MAX_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// reqwest's message with its causes ("error sending request" alone says nothing),
/// without the URL, which the caller's error names.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
