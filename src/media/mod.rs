//! Media: the gateway in the RTP path of a call.
//!
//! Owns the RTP port range, the SDP rewrite that puts the gateway's address in each leg's
//! offer and answer, the per-call relay (symmetric RTP with latching, RTCP, loss and jitter
//! statistics, media timeout), G.711 recording to WAV, voicemail greetings, and the
//! number's working hours. The SDP rewrite, G.711, the recording's timeline and the
//! schedule are pure; the relay and the recording writer are the adapters around them.
