//! Digest credentials (RFC 2617 / RFC 8760): we keep HA1 per algorithm, never the password.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// HA1 = H(username ":" realm ":" password) for both algorithms of RFC 8760.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha1Pair {
    pub realm: String,
    pub md5: String,
    pub sha256: String,
}

impl Ha1Pair {
    pub fn compute(username: &str, realm: &str, password: &str) -> Self {
        let input = format!("{username}:{realm}:{password}");
        Self {
            realm: realm.to_owned(),
            md5: hex::encode(Md5::digest(input.as_bytes())),
            sha256: hex::encode(Sha256::digest(input.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc2617_example() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        let pair = Ha1Pair::compute("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(pair.md5, "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(pair.sha256.len(), 64);
    }
}
