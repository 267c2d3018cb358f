//! SIP: the pure rules (message checks, digest, registrar, lockout, profiles, caller
//! identity) and the adapters around them (`endpoint`: sockets and rsipstack's
//! transactions; `server`: what each request does).

pub mod client;
pub mod digest;
pub mod endpoint;
pub mod identity;
pub mod lockout;
pub mod message;
pub mod profiles;
pub mod registrar;
pub mod server;
