//! Throwaway TLS certificates for tests, made with the `openssl` command at test time (no
//! private key is kept in the repository).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed certificate and its key, as PEM files, and the certificate's DER.
pub struct TestCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

/// A P-256 certificate for `name` (a DNS name; 127.0.0.1 is added as an IP address),
/// valid for a day, written as `<stem>.crt` and `<stem>.key` in `dir`.
pub fn self_signed(dir: &Path, stem: &str, name: &str) -> TestCertificate {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name},IP:127.0.0.1"))
        // webpki refuses a CA certificate as a server's own (it is trusted directly here).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made a certificate");
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl runs")
        .stdout;
    assert!(!der.is_empty(), "openssl converted the certificate");
    TestCertificate { cert, key, der }
}
