//! Process settings: where to listen, which database, where data lives.
//!
//! Sources, later ones winning: built-in defaults, an optional TOML file, `LEADLINE_*`
//! environment variables, command-line flags. Runtime configuration that admins change
//! (numbers, queues, users …) is not here: it lives in the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    /// Every problem found, one per line, so an operator fixes them in one go.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// TCP carries what a datagram cannot (large SDP offers, MESSAGE bodies), but a peer
/// must not make us buffer without bound.
const DEFAULT_TCP_MAX_MESSAGE: usize = 256 * 1024;
/// Below the UDP limit a TCP peer could not send what it may send over UDP.
const MIN_TCP_MAX_MESSAGE: usize = 65_535;
const MAX_TCP_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Mail servers commonly accept 25 MiB; a message is held in memory while it is taken in.
const DEFAULT_MAIL_MAX_MESSAGE: usize = 25 * 1024 * 1024;
/// Upper end of the load bounds: beyond it a bound protects nothing on any machine
/// (tokio's semaphore also caps permits far above it).
const MAX_BOUND: usize = 1_000_000;

/// The validated settings a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to a SQLite file in the data dir.
    pub database_url: String,
    /// Accepted as an admin token without being stored (`LEADLINE_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// SIP listen address, UDP and TCP on the same port.
    pub sip: SocketAddr,
    /// SIP over TLS listen address (RFC 3261 §26); set whenever a certificate is.
    pub sip_tls: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listeners, reloaded when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// HTTPS listen address of the API and console, next to plain `http`; needs
    /// `tls_cert` and `tls_key`.
    pub https: Option<SocketAddr>,
    /// PEM bundle of CA certificates trusted, besides the public roots, for carrier trunks
    /// over TLS (a carrier with a private CA).
    pub sip_tls_ca: Option<PathBuf>,
    /// Directory of extra or overriding SIP profiles (TOML), besides the built-in ones.
    pub sip_profiles: Option<PathBuf>,
    /// The SIP proxy in front of several nodes (`deploy/kamailio/leadline.cfg`): every
    /// request this node starts goes through it. `None`: requests go straight to their
    /// targets, as a single gateway does.
    pub sip_proxy: Option<SocketAddr>,
    /// SIP domain agents register under; also the digest realm.
    pub sip_domain: String,
    /// Digest algorithms offered to registering phones, most preferred first (RFC 8760).
    pub sip_digest: Vec<crate::sip::digest::Algorithm>,
    /// Largest SIP message accepted over TCP, in bytes (UDP is bounded by the datagram).
    pub sip_tcp_max_message: usize,
    /// SIP transactions one source address may have in progress at once (503 past it).
    pub sip_max_transactions_per_source: usize,
    /// Calls between their admitted INVITE and the caller's final answer (503 past it,
    /// before any lookup).
    pub max_calls_in_setup: usize,
    /// The runtime lag past which the receive loops refuse new calls (503) before they
    /// are queued; zero turns it off.
    pub sip_shed_lag: std::time::Duration,
    /// REGISTERs handled at once (503 past it, before the database).
    pub max_registers_in_progress: usize,
    /// How long the CRM lookup may hold up routing an INVITE before the call rings the
    /// number's queue and the CRM link completes afterwards.
    pub call_lookup_budget: std::time::Duration,
    /// The address agents reach the API at (`https://crm.example.com`), for links put in
    /// SIP messages (`Call-Info`); default [`default_public_url`].
    pub public_url: Option<String>,
    /// SMTP/LMTP listener of the forward/BCC address (E16).
    pub smtp: SocketAddr,
    /// The domain of the forward address `crm-<secret>@<domain>`; default the SIP domain.
    pub mail_domain: String,
    /// Largest message taken from IMAP or SMTP, in bytes.
    pub mail_max_message: usize,
    /// UDP ports RTP/RTCP pairs are taken from.
    pub rtp_ports: crate::media::PortRange,
    /// The address parties send media to (written in SDP); default the SIP address, or
    /// the address of the interface with the default route when SIP listens on all.
    pub media_address: Option<std::net::IpAddr>,
    /// A talking call whose media stopped this long is ended.
    pub media_timeout: std::time::Duration,
    /// Days call recordings and voicemail messages are kept; 0 keeps them.
    pub recording_retention_days: u32,
    /// Days audit log entries are kept; 0 keeps them.
    pub audit_retention_days: u32,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Webhook timeouts, retries and queue length (not in the config file: the defaults
    /// serve; tests shorten the waits), and whether webhooks may target private addresses
    /// (`webhook_private_targets`).
    pub webhooks: crate::webhooks::delivery::Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The layer of settings each source may give; all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub http: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub admin_token: Option<String>,
    pub sip: Option<String>,
    pub sip_tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub https: Option<String>,
    pub sip_tls_ca: Option<PathBuf>,
    pub sip_profiles: Option<PathBuf>,
    pub sip_proxy: Option<String>,
    pub sip_domain: Option<String>,
    pub sip_digest: Option<String>,
    pub sip_tcp_max_message: Option<usize>,
    pub sip_max_transactions_per_source: Option<usize>,
    pub max_calls_in_setup: Option<usize>,
    pub sip_shed_lag_ms: Option<u64>,
    pub max_registers_in_progress: Option<usize>,
    pub call_lookup_budget_ms: Option<u64>,
    pub public_url: Option<String>,
    pub smtp: Option<String>,
    pub mail_domain: Option<String>,
    pub mail_max_message: Option<usize>,
    pub rtp_ports: Option<String>,
    pub media_address: Option<String>,
    pub media_timeout_s: Option<u64>,
    pub recording_retention_days: Option<u32>,
    pub log_format: Option<String>,
    pub webhook_private_targets: Option<bool>,
    pub audit_retention_days: Option<u32>,
}

impl ConfigLayer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Fields of `over` replace those of `self`.
    pub fn merge(self, over: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            http: over.http.or(self.http),
            data_dir: over.data_dir.or(self.data_dir),
            database_url: over.database_url.or(self.database_url),
            admin_token: over.admin_token.or(self.admin_token),
            sip: over.sip.or(self.sip),
            sip_tls: over.sip_tls.or(self.sip_tls),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            https: over.https.or(self.https),
            sip_tls_ca: over.sip_tls_ca.or(self.sip_tls_ca),
            sip_profiles: over.sip_profiles.or(self.sip_profiles),
            sip_proxy: over.sip_proxy.or(self.sip_proxy),
            sip_domain: over.sip_domain.or(self.sip_domain),
            sip_digest: over.sip_digest.or(self.sip_digest),
            sip_tcp_max_message: over.sip_tcp_max_message.or(self.sip_tcp_max_message),
            call_lookup_budget_ms: over.call_lookup_budget_ms.or(self.call_lookup_budget_ms),
            sip_max_transactions_per_source: over
                .sip_max_transactions_per_source
                .or(self.sip_max_transactions_per_source),
            max_calls_in_setup: over.max_calls_in_setup.or(self.max_calls_in_setup),
            sip_shed_lag_ms: over.sip_shed_lag_ms.or(self.sip_shed_lag_ms),
            max_registers_in_progress: over
                .max_registers_in_progress
                .or(self.max_registers_in_progress),
            public_url: over.public_url.or(self.public_url),
            smtp: over.smtp.or(self.smtp),
            mail_domain: over.mail_domain.or(self.mail_domain),
            mail_max_message: over.mail_max_message.or(self.mail_max_message),
            rtp_ports: over.rtp_ports.or(self.rtp_ports),
            media_address: over.media_address.or(self.media_address),
            media_timeout_s: over.media_timeout_s.or(self.media_timeout_s),
            recording_retention_days: over
                .recording_retention_days
                .or(self.recording_retention_days),
            log_format: over.log_format.or(self.log_format),
            webhook_private_targets: over
                .webhook_private_targets
                .or(self.webhook_private_targets),
            audit_retention_days: over.audit_retention_days.or(self.audit_retention_days),
        }
    }

    /// Applies defaults and checks every field, reporting all problems at once.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let http = self.http.as_deref().unwrap_or("0.0.0.0:8080");
        let http = http.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "http: '{http}' is not an address:port such as 0.0.0.0:8080"
            ));
            SocketAddr::from(([0, 0, 0, 0], 8080))
        });
        let sip = self.sip.as_deref().unwrap_or("0.0.0.0:5060");
        let sip = sip.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "sip: '{sip}' is not an address:port such as 0.0.0.0:5060"
            ));
            SocketAddr::from(([0, 0, 0, 0], 5060))
        });
        let (sip_tls, tls_cert, tls_key) = tls_settings(
            sip,
            self.sip_tls.as_deref(),
            self.tls_cert,
            self.tls_key,
            &mut problems,
        );
        let https = https_setting(self.https.as_deref(), tls_cert.is_some(), &mut problems);
        let sip_tls_ca = self.sip_tls_ca.filter(|p| !p.as_os_str().is_empty());
        if let Some(ca) = &sip_tls_ca
            && !ca.is_file()
        {
            problems.push(format!("sip_tls_ca: {} is not a file", ca.display()));
        }
        if let Some(dir) = &self.sip_profiles
            && !dir.is_dir()
        {
            problems.push(format!(
                "sip_profiles: {} is not a directory",
                dir.display()
            ));
        }
        let sip_proxy = match self.sip_proxy.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => Some(addr),
                _ => {
                    problems.push(format!(
                        "sip_proxy: '{text}' is not the proxy's IP:PORT such as 10.0.0.5:5060"
                    ));
                    None
                }
            },
        };
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./leadline-data"));
        let database_url = match self.database_url {
            Some(url) if url.starts_with("sqlite:") || url.starts_with("postgres") => url,
            Some(url) => {
                problems.push(format!(
                    "database_url: '{url}' is neither sqlite://PATH nor postgres://…"
                ));
                url
            }
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("leadline.db").display()
            ),
        };
        let admin_token = self.admin_token.filter(|t| !t.is_empty());
        if let Some(token) = &admin_token
            && token.len() < 16
        {
            problems.push(
                "admin_token: use at least 16 characters (e.g. `openssl rand -hex 32`)".to_owned(),
            );
        }
        let sip_domain = self.sip_domain.unwrap_or_else(|| "leadline".to_owned());
        if sip_domain.is_empty() || sip_domain.contains(char::is_whitespace) {
            problems.push(format!("sip_domain: '{sip_domain}' is not a domain name"));
        }
        // RFC 8760: SHA-256 first. Phones that read only the first challenge and know only
        // MD5 (older firmware, SIPp) need `md5,sha256`.
        let digest_text = self.sip_digest.as_deref().unwrap_or("sha256,md5");
        let mut sip_digest = Vec::new();
        for name in digest_text.split(',').map(str::trim) {
            match name.to_ascii_lowercase().as_str() {
                "sha256" | "sha-256" => sip_digest.push(crate::sip::digest::Algorithm::Sha256),
                "md5" => sip_digest.push(crate::sip::digest::Algorithm::Md5),
                other => problems.push(format!(
                    "sip_digest: '{other}' is not a digest algorithm; use sha256, md5 or both in order"
                )),
            }
        }
        sip_digest.dedup();
        if sip_digest.is_empty() {
            problems.push("sip_digest: name at least one of sha256, md5".to_owned());
        }
        let sip_tcp_max_message = self.sip_tcp_max_message.unwrap_or(DEFAULT_TCP_MAX_MESSAGE);
        if !(MIN_TCP_MAX_MESSAGE..=MAX_TCP_MAX_MESSAGE).contains(&sip_tcp_max_message) {
            problems.push(format!(
                "sip_tcp_max_message: {sip_tcp_max_message} bytes is outside \
                 {MIN_TCP_MAX_MESSAGE}..={MAX_TCP_MAX_MESSAGE}"
            ));
        }
        let sip_max_transactions_per_source = self
            .sip_max_transactions_per_source
            .unwrap_or(crate::sip::server::MAX_IN_FLIGHT_PER_SOURCE);
        if sip_max_transactions_per_source == 0 {
            problems.push("sip_max_transactions_per_source: must be at least 1".to_owned());
        }
        let max_calls_in_setup = self
            .max_calls_in_setup
            .unwrap_or(crate::sip::admission::setup::DEFAULT_MAX_CALLS_IN_SETUP);
        if !(1..=MAX_BOUND).contains(&max_calls_in_setup) {
            problems.push(format!(
                "max_calls_in_setup: {max_calls_in_setup} is outside 1..={MAX_BOUND}"
            ));
        }
        let sip_shed_lag_ms = self
            .sip_shed_lag_ms
            .unwrap_or(crate::sip::admission::shed::DEFAULT_MAX_LAG_MS);
        if sip_shed_lag_ms > 10_000 {
            problems.push(format!(
                "sip_shed_lag_ms: {sip_shed_lag_ms} is outside 0..=10000"
            ));
        }
        let max_registers_in_progress = self
            .max_registers_in_progress
            .unwrap_or(crate::sip::server::MAX_CONCURRENT_REGISTERS);
        if !(1..=MAX_BOUND).contains(&max_registers_in_progress) {
            problems.push(format!(
                "max_registers_in_progress: {max_registers_in_progress} is outside 1..={MAX_BOUND}"
            ));
        }
        let budget_ms = self.call_lookup_budget_ms.unwrap_or(200);
        if !(10..=10_000).contains(&budget_ms) {
            problems.push(format!(
                "call_lookup_budget_ms: {budget_ms} is outside 10..=10000"
            ));
        }
        let public_url = self
            .public_url
            .map(|url| url.trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "public_url: '{url}' must start with http:// or https://"
            ));
        }
        let smtp_text = self.smtp.as_deref().unwrap_or("0.0.0.0:2525");
        let smtp = smtp_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "smtp: '{smtp_text}' is not an address:port such as 0.0.0.0:2525"
            ));
            SocketAddr::from(([0, 0, 0, 0], 2525))
        });
        let mail_domain = self
            .mail_domain
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| sip_domain.clone());
        if mail_domain.contains(char::is_whitespace) || mail_domain.contains('@') {
            problems.push(format!("mail_domain: '{mail_domain}' is not a domain name"));
        }
        let mail_max_message = self.mail_max_message.unwrap_or(DEFAULT_MAIL_MAX_MESSAGE);
        if !(64 * 1024..=256 * 1024 * 1024).contains(&mail_max_message) {
            problems.push(format!(
                "mail_max_message: {mail_max_message} bytes is outside 64 KiB..=256 MiB"
            ));
        }
        let rtp_ports_text = self.rtp_ports.as_deref().unwrap_or("20000-30000");
        let rtp_ports = rtp_ports_text
            .parse::<crate::media::PortRange>()
            .unwrap_or_else(|problem| {
                problems.push(format!("rtp_ports: {problem}"));
                crate::media::PortRange {
                    first: 20000,
                    last: 30000,
                }
            });
        let media_address = match self.media_address.as_deref().filter(|a| !a.is_empty()) {
            None => None,
            Some(text) => match text.parse::<std::net::IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => Some(ip),
                _ => {
                    problems.push(format!(
                        "media_address: '{text}' is not an IP address parties can reach, \
                         such as 203.0.113.10"
                    ));
                    None
                }
            },
        };
        let media_timeout_s = self.media_timeout_s.unwrap_or(60);
        if !(5..=3600).contains(&media_timeout_s) {
            problems.push(format!(
                "media_timeout_s: {media_timeout_s} is outside 5..=3600"
            ));
        }
        let recording_retention_days = self.recording_retention_days.unwrap_or(90);
        let log_format = match self.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                problems.push(format!("log_format: '{other}' must be text or json"));
                LogFormat::Text
            }
        };
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            http,
            sip,
            sip_tls,
            tls_cert,
            tls_key,
            https,
            sip_tls_ca,
            sip_profiles: self.sip_profiles,
            sip_proxy,
            data_dir,
            database_url,
            admin_token,
            sip_domain,
            sip_digest,
            sip_tcp_max_message,
            sip_max_transactions_per_source,
            max_calls_in_setup,
            sip_shed_lag: std::time::Duration::from_millis(sip_shed_lag_ms),
            max_registers_in_progress,
            call_lookup_budget: std::time::Duration::from_millis(budget_ms),
            public_url,
            smtp,
            mail_domain,
            mail_max_message,
            rtp_ports,
            media_address,
            media_timeout: std::time::Duration::from_secs(media_timeout_s),
            recording_retention_days,
            audit_retention_days: self.audit_retention_days.unwrap_or(365),
            log_format,
            webhooks: crate::webhooks::delivery::Policy {
                private_targets: self.webhook_private_targets.unwrap_or(false),
                ..crate::webhooks::delivery::Policy::default()
            },
        })
    }
}

/// The TLS listener follows the certificate: with `tls_cert` and `tls_key` it listens on
/// `sip_tls`, by default the SIP address's IP on port 5061 (RFC 3261 §26.2.2; port 0, any
/// free port, when SIP's port is 0). Without a certificate there is no TLS listener.
fn tls_settings(
    sip: SocketAddr,
    sip_tls: Option<&str>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    problems: &mut Vec<String>,
) -> (Option<SocketAddr>, Option<PathBuf>, Option<PathBuf>) {
    let tls_cert = tls_cert.filter(|p| !p.as_os_str().is_empty());
    let tls_key = tls_key.filter(|p| !p.as_os_str().is_empty());
    let sip_tls_text = sip_tls.filter(|t| !t.is_empty());
    let parsed = sip_tls_text.and_then(|text| match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "sip_tls: '{text}' is not an address:port such as 0.0.0.0:5061"
            ));
            None
        }
    });
    match (&tls_cert, &tls_key) {
        (Some(_), Some(_)) => {
            let default_port = if sip.port() == 0 { 0 } else { 5061 };
            let addr = parsed.unwrap_or_else(|| SocketAddr::new(sip.ip(), default_port));
            (Some(addr), tls_cert, tls_key)
        }
        (Some(_), None) => {
            problems.push("tls_key: tls_cert is set but not its private key".to_owned());
            (None, None, None)
        }
        (None, Some(_)) => {
            problems.push("tls_cert: tls_key is set but not its certificate".to_owned());
            (None, None, None)
        }
        (None, None) => {
            if sip_tls_text.is_some() {
                problems.push("sip_tls: needs tls_cert and tls_key".to_owned());
            }
            (None, None, None)
        }
    }
}

/// HTTPS is never on by default (plain HTTP needs no set-up); when asked for, it serves
/// the certificate of the TLS listeners, so a missing one is a start-up error.
fn https_setting(
    https: Option<&str>,
    has_certificate: bool,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let text = https.filter(|t| !t.is_empty())?;
    let Ok(addr) = text.parse::<SocketAddr>() else {
        problems.push(format!(
            "https: '{text}' is not an address:port such as 0.0.0.0:8443"
        ));
        return None;
    };
    if !has_certificate {
        problems.push("https: needs tls_cert and tls_key (PEM files)".to_owned());
        return None;
    }
    Some(addr)
}

/// The base of the links the gateway gives out when `public_url` is not set, from the
/// addresses actually bound. With HTTPS on, links go there: a link followed over plain
/// HTTP would carry the agent's session in clear text. A wildcard bind address
/// (`0.0.0.0`, `::`) is no host a client can reach, so the machine's host name stands in
/// for it; without a usable one the address is kept as bound, as before.
pub fn default_public_url(
    http: SocketAddr,
    https: Option<SocketAddr>,
    host_name: Option<&str>,
) -> String {
    let (scheme, addr, scheme_port) = match https {
        Some(addr) => ("https", addr, 443),
        None => ("http", http, 80),
    };
    let host = match host_name.filter(|name| addr.ip().is_unspecified() && is_host_name(name)) {
        Some(name) => name.to_owned(),
        None => match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        },
    };
    if addr.port() == scheme_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{}", addr.port())
    }
}

/// RFC 1123 host names only: anything else (an empty or odd `uname` node name) would make
/// a link no client can follow.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Config {
    /// Defaults for tests and embedding: everything under `data_dir`, HTTP on `http`, SIP
    /// on port 0 of loopback (any free port).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>, http: SocketAddr) -> Self {
        let layer = ConfigLayer {
            http: Some(http.to_string()),
            sip: Some("127.0.0.1:0".to_owned()),
            smtp: Some("127.0.0.1:0".to_owned()),
            data_dir: Some(data_dir.into()),
            ..ConfigLayer::default()
        };
        layer
            .resolve()
            .expect("defaults with a socket address are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_setup() {
        let config = ConfigLayer::default().resolve().unwrap();
        assert_eq!(config.http.to_string(), "0.0.0.0:8080");
        assert_eq!(config.sip.to_string(), "0.0.0.0:5060");
        assert_eq!(config.data_dir, PathBuf::from("./leadline-data"));
        assert_eq!(
            config.database_url,
            "sqlite://./leadline-data/leadline.db?mode=rwc"
        );
    }

    #[test]
    fn later_layers_win() {
        let file = ConfigLayer {
            http: Some("127.0.0.1:1".into()),
            sip_domain: Some("file.example".into()),
            ..Default::default()
        };
        let flags = ConfigLayer {
            http: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let config = file.merge(flags).resolve().unwrap();
        assert_eq!(config.http.port(), 2);
        assert_eq!(config.sip_domain, "file.example");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let layer = ConfigLayer {
            http: Some("nowhere".into()),
            database_url: Some("mysql://x".into()),
            log_format: Some("xml".into()),
            ..Default::default()
        };
        let ConfigError::Invalid(problems) = layer.resolve().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn load_bounds_default_and_refuse_zero() {
        let config = ConfigLayer::default().resolve().unwrap();
        assert_eq!(
            config.max_calls_in_setup,
            crate::sip::admission::setup::DEFAULT_MAX_CALLS_IN_SETUP
        );
        assert_eq!(
            config.max_registers_in_progress,
            crate::sip::server::MAX_CONCURRENT_REGISTERS
        );
        assert_eq!(
            config.sip_shed_lag,
            std::time::Duration::from_millis(crate::sip::admission::shed::DEFAULT_MAX_LAG_MS)
        );
        let off = ConfigLayer {
            sip_shed_lag_ms: Some(0),
            ..Default::default()
        };
        assert!(off.resolve().unwrap().sip_shed_lag.is_zero());
        let layer = ConfigLayer {
            max_calls_in_setup: Some(0),
            max_registers_in_progress: Some(0),
            sip_shed_lag_ms: Some(10_001),
            ..Default::default()
        };
        let ConfigError::Invalid(problems) = layer.resolve().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("max_calls_in_setup"),
            "{problems:?}"
        );
    }

    #[test]
    fn sip_proxy_is_an_address_the_nodes_can_send_to() {
        assert_eq!(ConfigLayer::default().resolve().unwrap().sip_proxy, None);
        let set = ConfigLayer {
            sip_proxy: Some("10.0.0.5:5060".into()),
            ..Default::default()
        };
        assert_eq!(
            set.resolve().unwrap().sip_proxy,
            Some("10.0.0.5:5060".parse().unwrap())
        );
        for bad in ["proxy.example", "0.0.0.0:5060", "10.0.0.5:0"] {
            let layer = ConfigLayer {
                sip_proxy: Some(bad.into()),
                ..Default::default()
            };
            let ConfigError::Invalid(problems) = layer.resolve().unwrap_err() else {
                panic!("expected Invalid");
            };
            assert!(problems[0].starts_with("sip_proxy"), "{problems:?}");
        }
    }

    #[test]
    fn sip_tls_listens_when_a_certificate_is_set_and_only_then() {
        assert_eq!(ConfigLayer::default().resolve().unwrap().sip_tls, None);
        let with_cert = ConfigLayer {
            tls_cert: Some("/etc/leadline/cert.pem".into()),
            tls_key: Some("/etc/leadline/key.pem".into()),
            ..Default::default()
        };
        let config = with_cert.clone().resolve().unwrap();
        assert_eq!(config.sip_tls, Some("0.0.0.0:5061".parse().unwrap()));
        let chosen = ConfigLayer {
            sip_tls: Some("127.0.0.1:5071".into()),
            ..with_cert.clone()
        };
        assert_eq!(
            chosen.resolve().unwrap().sip_tls,
            Some("127.0.0.1:5071".parse().unwrap())
        );
        let any_port = ConfigLayer {
            sip: Some("127.0.0.1:0".into()),
            ..with_cert
        };
        assert_eq!(
            any_port.resolve().unwrap().sip_tls,
            Some("127.0.0.1:0".parse().unwrap())
        );
        for (layer, field) in [
            (
                ConfigLayer {
                    tls_cert: Some("c.pem".into()),
                    ..Default::default()
                },
                "tls_key",
            ),
            (
                ConfigLayer {
                    tls_key: Some("k.pem".into()),
                    ..Default::default()
                },
                "tls_cert",
            ),
            (
                ConfigLayer {
                    sip_tls: Some("0.0.0.0:5061".into()),
                    ..Default::default()
                },
                "sip_tls",
            ),
        ] {
            let ConfigError::Invalid(problems) = layer.resolve().unwrap_err() else {
                panic!("expected Invalid");
            };
            assert!(problems[0].starts_with(field), "{problems:?}");
        }
    }

    #[test]
    fn https_is_off_by_default_and_needs_the_certificate() {
        assert_eq!(ConfigLayer::default().resolve().unwrap().https, None);
        let with_cert = ConfigLayer {
            tls_cert: Some("/etc/leadline/cert.pem".into()),
            tls_key: Some("/etc/leadline/key.pem".into()),
            https: Some("127.0.0.1:8443".into()),
            ..Default::default()
        };
        let config = with_cert.clone().resolve().unwrap();
        assert_eq!(config.https, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(
            config.http.to_string(),
            "0.0.0.0:8080",
            "plain HTTP stays on"
        );
        for (layer, problem) in [
            (
                ConfigLayer {
                    https: Some("0.0.0.0:8443".into()),
                    ..Default::default()
                },
                "https: needs tls_cert",
            ),
            (
                ConfigLayer {
                    https: Some("port 443".into()),
                    ..with_cert
                },
                "https: 'port 443'",
            ),
        ] {
            let ConfigError::Invalid(problems) = layer.resolve().unwrap_err() else {
                panic!("expected Invalid");
            };
            assert!(problems[0].starts_with(problem), "{problems:?}");
        }
    }

    #[test]
    fn public_url_defaults_to_https_when_it_is_on() {
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let https: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(
            default_public_url(http, None, Some("crm")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            default_public_url(http, Some(https), Some("crm")),
            "https://127.0.0.1:8443"
        );
    }

    #[test]
    fn public_url_names_the_host_for_a_wildcard_bind() {
        let http: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let https: SocketAddr = "[::]:443".parse().unwrap();
        assert_eq!(
            default_public_url(http, None, Some("crm.example.com")),
            "http://crm.example.com:8080"
        );
        assert_eq!(
            default_public_url(http, Some(https), Some("crm")),
            "https://crm",
            "the scheme's own port is left out"
        );
        for unusable in [None, Some(""), Some("has space"), Some("-x"), Some("a..b")] {
            assert_eq!(
                default_public_url(http, Some(https), unusable),
                "https://[::]",
                "{unusable:?}"
            );
        }
        assert_eq!(
            default_public_url("[::1]:80".parse().unwrap(), None, Some("crm")),
            "http://[::1]"
        );
    }

    #[test]
    fn toml_file_with_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leadline.toml");
        std::fs::write(&path, "http = \"127.0.0.1:9\"\nhtpp = 1\n").unwrap();
        let err = ConfigLayer::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("htpp"), "{err}");
    }
}
