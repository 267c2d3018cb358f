//! SIP: message rules, digest authentication and (in later layers) transports, registrar
//! and the B2BUA. This module holds only pure pieces so far.

pub mod digest;
pub mod identity;
pub mod lockout;
pub mod message;
pub mod profiles;
pub mod registrar;
