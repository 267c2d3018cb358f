//! The server certificate of every TLS listener (SIP over TLS, HTTPS): read from two PEM
//! files, served to each new handshake, and swapped when the files change, without a
//! restart. A broken replacement is logged and the certificate in use is kept, so a
//! certificate renewal that writes the two files one after the other never takes the
//! listeners down.
//!
//! Only rustls's ring provider is used: the process has exactly one crypto provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// How often the files are looked at; a renewed certificate is served within it.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")]
    NoKey { path: PathBuf },
    #[error("{cert} and {key} do not make a certificate: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key in two PEM texts, checked to belong together.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey {
        path: key_path.to_owned(),
    })?;
    // `from_der` also checks that the key is the certificate's (a half-renewed pair is not).
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The files' contents last looked at, loaded or not: a broken pair is reported once, not
/// every second, and tried again as soon as either file changes.
#[derive(Default, PartialEq, Eq)]
struct Seen {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// A server certificate that follows its PEM files (see the module docs).
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Reads the pair once; an unreadable or broken pair is an error (start-up refuses it).
    /// Nothing watches the files: see [`ReloadingCertificate::start`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let seen = Seen {
            cert: read(cert_path)?,
            key: read(key_path)?,
        };
        let key = certified_key(&seen.cert, &seen.key, cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }

    /// [`ReloadingCertificate::load`] plus a task that looks at the files every
    /// [`RELOAD_PERIOD`] until `cancel` or until the certificate is dropped.
    pub fn start(
        cert_path: &Path,
        key_path: &Path,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, TlsError> {
        let certificate = Arc::new(Self::load(cert_path, key_path)?);
        tokio::spawn(watch(Arc::downgrade(&certificate), cancel));
        Ok(certificate)
    }

    /// The certificate handed to new handshakes now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files and swaps the certificate if they changed and make a valid pair.
    /// `Ok(true)`: swapped. An error is returned once per distinct broken content.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Seen {
            cert: read(&self.cert_path)?,
            key: read(&self.key_path)?,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(false);
        }
        let loaded = certified_key(&now.cert, &now.key, &self.cert_path, &self.key_path);
        *seen = now;
        drop(seen);
        let key = loaded?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(true)
    }
}

async fn watch(certificate: Weak<ReloadingCertificate>, cancel: CancellationToken) {
    // A missing file is usually a renewal in progress (remove, then write): say so once.
    let mut unreadable = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RELOAD_PERIOD) => {}
        }
        let Some(certificate) = certificate.upgrade() else {
            return;
        };
        let outcome = tokio::task::spawn_blocking(move || certificate.reload_if_changed()).await;
        match outcome {
            Ok(Ok(true)) => {
                unreadable = false;
                metrics::counter!("leadline_tls_certificate_reloaded_total").increment(1);
                tracing::info!("TLS certificate reloaded");
            }
            Ok(Ok(false)) => unreadable = false,
            Ok(Err(err @ TlsError::Read { .. })) => {
                if !unreadable {
                    tracing::warn!(%err, "TLS certificate files unreadable; keeping the current one");
                }
                unreadable = true;
            }
            Ok(Err(err)) => {
                metrics::counter!("leadline_tls_certificate_refused_total").increment(1);
                tracing::warn!(%err, "new TLS certificate refused; keeping the current one");
            }
            Err(join) => tracing::warn!(%join, "TLS certificate reload failed"),
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server configuration serving `cert` (TLS 1.2 and 1.3, no client certificates),
/// offering `alpn` protocols (empty for SIP; `h2`, `http/1.1` for HTTPS).
pub fn server_config(cert: Arc<ReloadingCertificate>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_foreign_pem_is_named_by_file() {
        let cert = Path::new("/etc/leadline/cert.pem");
        let key = Path::new("/etc/leadline/key.pem");
        let err = certified_key(b"", b"", cert, key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
        let pem = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let err = certified_key(pem, b"not a key", cert, key).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        assert!(err.to_string().contains("key.pem"), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = ReloadingCertificate::load(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
