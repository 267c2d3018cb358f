//! People's console passwords: the length rule, and argon2id hashing.
//!
//! Stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`): the crate's
//! defaults, which are OWASP's recommendation, with a random 128-bit salt. The parameters
//! travel in the string, so raising them later still verifies the older hashes.
//!
//! Hashing and verifying take tens of milliseconds of CPU and 19 MiB each: callers run
//! them off the async workers (`spawn_blocking`) and bound how many run at once.

use std::sync::OnceLock;

use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use rand::RngCore as _;

/// Fewest characters of a password.
pub const MIN_CHARS: usize = 10;
/// Most characters of a password: argon2 takes any length, but a megabyte of "password"
/// is a way to make the server hash a megabyte.
pub const MAX_CHARS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password needs at least {MIN_CHARS} characters")]
    TooShort,
    #[error("a password may have at most {MAX_CHARS} characters")]
    TooLong,
    /// The hasher refused (it does not for the lengths allowed here).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The length rule, counted in characters (not bytes), so a passphrase in any script
/// counts the same.
pub fn check_rules(password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        Err(PasswordError::TooShort)
    } else if chars > MAX_CHARS {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

/// The stored form of a password: an argon2id PHC string with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|phc| phc.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` is the one `stored` was made from. A stored value that is not a
/// PHC string matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(phc) => Argon2::default()
            .verify_password(password.as_bytes(), &phc)
            .is_ok(),
        Err(_) => false,
    }
}

/// Does the work of [`verify`] against a password nobody knows, and says no. Signing in
/// with an e-mail that has no password (unknown, or a person without one) costs as long
/// as a wrong password, so the answer's timing does not tell which e-mails exist.
pub fn verify_nobody(password: &str) -> bool {
    verify(password, nobody());
    false
}

/// Makes the hash [`verify_nobody`] checks against, so the first unknown e-mail does not
/// take twice as long as a known one. Called once at start, off the async workers.
pub fn warm_up() {
    nobody();
}

fn nobody() -> &'static str {
    static NOBODY: OnceLock<String> = OnceLock::new();
    NOBODY.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        hash(&hex::encode(secret)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_has_ten_to_1024_characters() {
        assert_eq!(check_rules("123456789"), Err(PasswordError::TooShort));
        assert_eq!(check_rules(""), Err(PasswordError::TooShort));
        assert_eq!(check_rules("1234567890"), Ok(()));
        // Characters, not bytes: nine umlauts are 18 bytes and still too short.
        assert_eq!(check_rules(&"ä".repeat(9)), Err(PasswordError::TooShort));
        assert_eq!(check_rules(&"ä".repeat(1024)), Ok(()));
        assert_eq!(check_rules(&"a".repeat(1025)), Err(PasswordError::TooLong));
    }

    #[test]
    fn a4_passwords_are_stored_as_salted_argon2id() {
        let stored = hash("correct horse battery").unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains("correct horse"));
        assert_ne!(
            stored,
            hash("correct horse battery").unwrap(),
            "random salt"
        );
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse battery!", &stored));
        assert!(!verify("correct horse battery", "not a phc string"));
        assert!(!verify_nobody("correct horse battery"));
    }
}
