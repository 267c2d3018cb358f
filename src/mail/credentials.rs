//! Where the poller and the connection test get a mailbox's login, and the only place
//! its secrets leave the database (A4).
//!
//! A password mailbox logs in with its stored password. An OAuth2 mailbox logs in with an
//! access token: the cached one while it is fresh, else a new one from the token endpoint
//! for the stored refresh token (RFC 6749 §6). One refresh per mailbox runs at a time, so
//! the poller and a connection test never spend the same refresh token twice; a rotated
//! refresh token is stored. A refusal of the endpoint (`invalid_grant`: revoked or
//! expired; `invalid_client`: a wrong secret; …) is remembered: retries of the broken
//! mailbox answer with the same error without asking the provider again, until a new
//! refresh token or another client is stored. An access token the IMAP
//! server refuses although it should still be valid (revoked early) is dropped and the
//! login tried once more with a new one.
//!
//! [`authorize`] gets the first refresh token with the device authorization grant
//! (RFC 8628) for `leadline mailbox authorize`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::imap::{self, ImapError, ImapSession, ImapSettings};
use super::oauth2::endpoint::Endpoints;
use super::oauth2::{
    AccessToken, Client, DeviceAuthorization, DevicePolling, DeviceStep, Failure, OAuth2Error,
    Token,
};
use super::poller::imap_settings;
use crate::crm::model::{MailAuth, OAuth2Provider};
use crate::store::{MailboxRecord, OAuth2Settings, Store, StoreError};

/// Why a mailbox could not log in.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    OAuth2(#[from] OAuth2Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    /// Retrying will not help until someone acts: no refresh token yet, or a rejected one.
    pub fn awaits_operator(&self) -> bool {
        matches!(self, LoginError::OAuth2(e) if e.awaits_operator())
    }
}

/// The logins of all mailboxes of this process; cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    endpoints: Endpoints,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

/// What one mailbox's OAuth2 login knows between attempts.
#[derive(Default)]
struct Slot {
    /// The client the entries below belong to: another one voids them.
    client: Option<ClientKey>,
    /// The refresh token `token` came from: a different stored one voids it.
    grant: Option<String>,
    token: Option<AccessToken>,
    /// A refresh token the endpoint refused, and what it said.
    rejected: Option<(String, OAuth2Error)>,
}

#[derive(Clone, PartialEq, Eq)]
struct ClientKey {
    token_url: String,
    client_id: String,
    client_secret: Option<String>,
    scope: String,
    username: String,
}

impl ClientKey {
    fn of(mailbox: &MailboxRecord, oauth2: &OAuth2Settings, secret: Option<&str>) -> ClientKey {
        ClientKey {
            token_url: oauth2.token_url.clone(),
            client_id: oauth2.client_id.clone(),
            client_secret: secret.map(str::to_owned),
            scope: oauth2.scope.clone(),
            username: mailbox.username.clone(),
        }
    }
}

impl Credentials {
    pub fn new(store: Store) -> Credentials {
        Credentials {
            inner: Arc::new(Inner {
                store,
                endpoints: Endpoints::new(),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connects and logs in (the poller's session).
    pub async fn connect(&self, mailbox: &MailboxRecord) -> Result<ImapSession, LoginError> {
        let (settings, cached) = self.settings(mailbox).await?;
        match imap::connect(&settings).await {
            Err(ImapError::LoginFailed { .. }) if cached => {
                self.forget_token(&mailbox.id).await;
                let (settings, _) = self.settings(mailbox).await?;
                Ok(imap::connect(&settings).await?)
            }
            other => Ok(other?),
        }
    }

    /// E10: connects, logs in and out with the same credentials the poller uses.
    pub async fn test_login(&self, mailbox: &MailboxRecord) -> Result<(), LoginError> {
        let (settings, cached) = self.settings(mailbox).await?;
        match imap::test_login(&settings).await {
            Err(ImapError::LoginFailed { .. }) if cached => {
                self.forget_token(&mailbox.id).await;
                let (settings, _) = self.settings(mailbox).await?;
                Ok(imap::test_login(&settings).await?)
            }
            other => Ok(other?),
        }
    }

    /// The IMAP settings with the mailbox's current secret, and whether an access token
    /// came from the cache rather than fresh from the endpoint.
    async fn settings(&self, mailbox: &MailboxRecord) -> Result<(ImapSettings, bool), LoginError> {
        match (mailbox.auth, &mailbox.oauth2) {
            (MailAuth::Password, _) => {
                let password = self.inner.store.mailbox_password(&mailbox.id).await?;
                Ok((imap_settings(mailbox, password), false))
            }
            (MailAuth::Oauth2, Some(oauth2)) => {
                let (token, cached) = self.access_token(mailbox, oauth2).await?;
                let mut settings = imap_settings(mailbox, String::new());
                settings.bearer = Some(token);
                Ok((settings, cached))
            }
            (MailAuth::Oauth2, None) => Err(StoreError::Corrupt(format!(
                "mailbox {} is an OAuth2 mailbox without an OAuth2 client",
                mailbox.id
            ))
            .into()),
        }
    }

    fn slot(&self, mailbox: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(mailbox.to_owned()).or_default().clone()
    }

    async fn forget_token(&self, mailbox: &str) {
        self.slot(mailbox).lock().await.token = None;
    }

    async fn access_token(
        &self,
        mailbox: &MailboxRecord,
        oauth2: &OAuth2Settings,
    ) -> Result<(String, bool), LoginError> {
        let slot = self.slot(&mailbox.id);
        // Held across the refresh: a second caller waits and takes the new token.
        let mut slot = slot.lock().await;
        let secrets = self.inner.store.mailbox_oauth2_secrets(&mailbox.id).await?;
        let key = ClientKey::of(mailbox, oauth2, secrets.client_secret.as_deref());
        if slot.client.as_ref() != Some(&key) || slot.grant != secrets.refresh_token {
            // New client or a new grant (authorized again): nothing known applies.
            *slot = Slot {
                client: Some(key),
                grant: secrets.refresh_token.clone(),
                ..Slot::default()
            };
        }
        if let Some(token) = &slot.token
            && token.usable_at(Instant::now())
        {
            return Ok((token.value.clone(), true));
        }
        let Some(refresh_token) = secrets.refresh_token else {
            return Err(OAuth2Error::NotAuthorized {
                mailbox: mailbox.id.clone(),
            }
            .into());
        };
        if let Some((rejected, error)) = &slot.rejected
            && *rejected == refresh_token
        {
            return Err(error.clone().into());
        }
        let client = Client {
            token_url: oauth2.token_url.clone(),
            device_authorization_url: oauth2.device_authorization_url.clone(),
            client_id: oauth2.client_id.clone(),
            client_secret: secrets.client_secret,
            scope: oauth2.scope.clone(),
        };
        let requested = Instant::now();
        let token = match self.inner.endpoints.refresh(&client, &refresh_token).await {
            Ok(token) => token,
            Err(Failure::Refused(answer)) => {
                let error = if answer.error == "invalid_grant" {
                    OAuth2Error::GrantRejected {
                        token_url: client.token_url.clone(),
                        answer,
                        mailbox: mailbox.id.clone(),
                    }
                } else {
                    Failure::Refused(answer).into_error(&client.token_url)
                };
                tracing::warn!(mailbox = %mailbox.id, %error, "OAuth2 refresh refused");
                slot.rejected = Some((refresh_token, error.clone()));
                return Err(error.into());
            }
            Err(failure) => return Err(failure.into_error(&client.token_url).into()),
        };
        metrics::counter!("leadline_mail_oauth2_refreshes_total").increment(1);
        if let Some(rotated) = token
            .refresh_token
            .as_ref()
            .filter(|t| **t != refresh_token)
        {
            match self
                .inner
                .store
                .rotate_mailbox_refresh_token(&mailbox.id, &refresh_token, rotated)
                .await
            {
                Ok(true) => slot.grant = Some(rotated.clone()),
                Ok(false) => {
                    tracing::info!(mailbox = %mailbox.id, "a new refresh token was stored meanwhile; keeping it");
                }
                // The old refresh token stays stored: most providers accept it until it
                // expires, and the access token is good now.
                Err(error) => {
                    tracing::error!(mailbox = %mailbox.id, %error, "cannot store the rotated refresh token");
                }
            }
        }
        let access = AccessToken::new(&token, requested);
        let value = access.value.clone();
        slot.token = Some(access);
        Ok((value, false))
    }
}

/// `leadline mailbox authorize`: runs the device authorization grant (RFC 8628) for
/// `mailbox` and stores the refresh token it yields. `show` gets the code to enter and
/// where; `second` is how long one of the protocol's seconds lasts (a real second except
/// in tests).
pub async fn authorize(
    store: &Store,
    mailbox: &str,
    second: Duration,
    show: impl FnOnce(&MailboxRecord, &DeviceAuthorization),
) -> Result<MailboxRecord, LoginError> {
    let record = store.get_mailbox(mailbox).await?;
    let oauth2 = match (record.auth, &record.oauth2) {
        (MailAuth::Oauth2, Some(oauth2)) => oauth2.clone(),
        _ => {
            return Err(OAuth2Error::NotOAuth2 {
                mailbox: mailbox.to_owned(),
            }
            .into());
        }
    };
    let Some(device_url) = oauth2.device_authorization_url.clone() else {
        return Err(OAuth2Error::NoDeviceEndpoint {
            mailbox: mailbox.to_owned(),
        }
        .into());
    };
    let secrets = store.mailbox_oauth2_secrets(mailbox).await?;
    let client = Client {
        token_url: oauth2.token_url.clone(),
        device_authorization_url: Some(device_url.clone()),
        client_id: oauth2.client_id.clone(),
        client_secret: secrets.client_secret,
        scope: oauth2.scope.clone(),
    };
    let endpoints = Endpoints::new();
    let device = endpoints
        .authorize_device(&client, &device_url)
        .await
        .map_err(|e| with_hint(e, oauth2.provider))?;
    show(&record, &device);
    let mut polling = DevicePolling::new(&device, &client.token_url, Instant::now(), second);
    let mut wait = polling.interval();
    let token = loop {
        tokio::time::sleep(wait).await;
        let answer = endpoints.poll_device(&client, &device.device_code).await;
        match polling.next(answer, Instant::now()) {
            DeviceStep::Granted(token) => break token,
            DeviceStep::PollAfter(next) => wait = next,
            DeviceStep::Failed(error) => return Err(with_hint(error, oauth2.provider).into()),
        }
    };
    let refresh_token = granted_refresh_token(&token, &client.token_url, oauth2.provider)?;
    store
        .set_mailbox_refresh_token(mailbox, &refresh_token)
        .await?;
    Ok(store.get_mailbox(mailbox).await?)
}

fn granted_refresh_token(
    token: &Token,
    token_url: &str,
    provider: Option<OAuth2Provider>,
) -> Result<String, OAuth2Error> {
    token
        .refresh_token
        .clone()
        .ok_or(OAuth2Error::NoRefreshToken {
            url: token_url.to_owned(),
            hint: match provider {
                Some(OAuth2Provider::Microsoft) | None => {
                    ": the scope must include offline_access (Microsoft) or the provider's \
                 equivalent"
                }
                Some(OAuth2Provider::Google) => "",
            },
        })
}

/// What we know about a provider's refusals.
fn with_hint(error: OAuth2Error, provider: Option<OAuth2Provider>) -> OAuth2Error {
    match (error, provider) {
        (OAuth2Error::Refused { url, answer, .. }, Some(OAuth2Provider::Google))
            if answer.error == "invalid_scope" =>
        {
            OAuth2Error::Refused {
                url,
                answer,
                hint: "; Google's device flow does not grant the mail scope \
                   (https://mail.google.com/): get the refresh token with the installed-app \
                   (loopback) flow and set it as oauth2.refresh_token",
            }
        }
        (OAuth2Error::Refused { url, answer, .. }, Some(OAuth2Provider::Microsoft))
            if answer.error == "invalid_client" || answer.error == "unauthorized_client" =>
        {
            OAuth2Error::Refused {
                url,
                answer,
                hint: "; the app registration must allow public client flows for the device \
                       code flow",
            }
        }
        (error, _) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::oauth2::ErrorAnswer;

    #[test]
    fn google_device_scope_refusal_says_what_to_do() {
        let refused = OAuth2Error::Refused {
            url: "https://oauth2.googleapis.com/device/code".into(),
            answer: ErrorAnswer {
                error: "invalid_scope".into(),
                description: Some("Invalid device flow scope: https://mail.google.com/".into()),
            },
            hint: "",
        };
        let text = with_hint(refused.clone(), Some(OAuth2Provider::Google)).to_string();
        assert!(text.contains("oauth2.refresh_token"), "{text}");
        // Another provider's invalid_scope gets no Google advice.
        assert_eq!(with_hint(refused.clone(), None), refused);
    }

    #[test]
    fn a_grant_without_refresh_token_is_an_error() {
        let token = Token {
            access_token: "a".into(),
            expires_in: None,
            refresh_token: None,
            scope: None,
        };
        let error = granted_refresh_token(&token, "https://t", Some(OAuth2Provider::Microsoft))
            .unwrap_err();
        assert!(error.to_string().contains("offline_access"), "{error}");
        let token = Token {
            refresh_token: Some("rt".into()),
            ..token
        };
        assert_eq!(
            granted_refresh_token(&token, "https://t", None).unwrap(),
            "rt"
        );
    }
}
