//! SIP: the pure rules (message checks, digest, registrar, lockout, profiles, caller
//! identity, the carrier registration and keep-alive schedules) and the adapters around
//! them (`endpoint`: sockets and rsipstack's transactions; `server`: what each request
//! does; `client`: requests we send; `trunk::task`, `keepalive::task`: the timers).

pub mod admission;
pub mod b2bua;
pub mod call;
pub mod client;
pub mod digest;
pub mod endpoint;
pub mod identity;
pub mod keepalive;
pub mod lockout;
pub mod message;
pub mod profiles;
pub mod queueing;
pub mod registrar;
pub mod router;
pub mod server;
pub mod session_timer;
pub mod trunk;
pub mod trunks;
